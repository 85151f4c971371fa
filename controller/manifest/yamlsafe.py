"""Stage 1 of manifest loading: YAML text -> located documents, defensively.

The tree is built here from `yaml.parse` events with an explicit stack (PyYAML's
composer and constructor never see the document; only single scalars are converted,
by SafeConstructor's methods for the plain types), so that:

- anchors and aliases are refused at the first event that shows one, before anything
  is expanded (a few hundred bytes of "billion laughs" stay a few hundred events);
- nesting depth and node count are capped while parsing, and no recursion is used,
  so neither RecursionError nor MemoryError can escape;
- duplicate mapping keys are findings naming both lines (PyYAML keeps the last one);
- only plain YAML scalar types are constructed (null, bool, int, float, str, date):
  `!!python/...` and every other tag is a finding, never executed;
- every value keeps its line and its spelling (see `located`), for `file:line`
  messages and for explaining YAML 1.1 implicit typing (see `yaml11`).

A finding inside a document drops that document (later stages never see half-read
values); a syntax error, excessive depth or node count stops reading the file.
The caller enforces the byte limit before any of this runs (see `files`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.constructor import SafeConstructor

from controller.errors import Problem
from controller.manifest.located import Document, JsonPath, Loc, Scalar, format_path, shown

MAX_DEPTH = 64           # nested mappings/lists; real manifests use fewer than 8
MAX_NODES = 200_000      # values per file; a 500-VM file has about 20,000

_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_RESOLVER = yaml.resolver.Resolver()
_CONSTRUCTOR = SafeConstructor()

_Y = "tag:yaml.org,2002:"
_MAP_TAGS = {None, "!", _Y + "map"}
_SEQ_TAGS = {None, "!", _Y + "seq"}
_SCALAR_BUILDERS: dict[str, Callable[[SafeConstructor, yaml.ScalarNode], Any]] = {
    _Y + "null": SafeConstructor.construct_yaml_null,
    _Y + "bool": SafeConstructor.construct_yaml_bool,
    _Y + "int": SafeConstructor.construct_yaml_int,
    _Y + "float": SafeConstructor.construct_yaml_float,
    _Y + "str": SafeConstructor.construct_yaml_str,
    _Y + "timestamp": SafeConstructor.construct_yaml_timestamp,
}


class _StopFile(Exception):
    """Reading this file cannot sensibly continue; carries the finding."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(str(problem))
        self.problem = problem


@dataclass
class _Frame:
    """An open mapping or list while its events are read."""

    path: JsonPath
    value: dict[str, Any] | list[Any]
    line: int
    key: str | None = None           # mappings: the key waiting for its value
    key_line: int = 0
    key_lines: dict[str, int] = field(default_factory=dict)


class _DocumentBuilder:
    """Assembles one document from events; collects findings instead of raising."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.stack: list[_Frame] = []
        self.root: Any = None
        self.root_line = 0
        self.locs: dict[JsonPath, Loc] = {}
        self.problems: list[Problem] = []

    def expecting_key(self) -> bool:
        return bool(self.stack) and isinstance(self.stack[-1].value, dict) and self.stack[-1].key is None

    def next_path(self) -> JsonPath:
        """The path of the node that starts now."""
        if not self.stack:
            return ()
        top = self.stack[-1]
        if isinstance(top.value, list):
            return top.path + (len(top.value),)
        return top.path + (top.key,) if top.key is not None else top.path

    def fail(self, line: int, path: JsonPath, message: str) -> None:
        self.problems.append(Problem(self.file, line, format_path(path), message))

    def open(self, value: dict[str, Any] | list[Any], line: int) -> None:
        if len(self.stack) >= MAX_DEPTH:
            raise _StopFile(self.too_deep(line))
        path = self.next_path()
        self.stack.append(_Frame(path, value, line))

    def too_deep(self, line: int) -> Problem:
        outer = self.next_path()[:3]
        return Problem(self.file, line, format_path(outer) + "...", f"nested more than {MAX_DEPTH} levels deep")

    def close(self) -> None:
        frame = self.stack.pop()
        self.attach(frame.value, frame.line, None)

    def attach(self, value: Any, line: int, scalar: Scalar | None) -> None:
        """Place a finished node: as the root, a list item, a key, or a key's value."""
        if not self.stack:
            self.root, self.root_line = value, line
            self.locs[()] = Loc(line, line, scalar)
            return
        top = self.stack[-1]
        if isinstance(top.value, list):
            self.locs[top.path + (len(top.value),)] = Loc(line, line, scalar)
            top.value.append(value)
        elif top.key is None:
            self.take_key(top, line, scalar)
        else:
            at = line if scalar else top.key_line
            self.locs[top.path + (top.key,)] = Loc(at, top.key_line, scalar)
            top.value[top.key] = value
            top.key = None

    def take_key(self, top: _Frame, line: int, scalar: Scalar | None) -> None:
        assert isinstance(top.value, dict)
        if scalar is None:
            self.fail(line, top.path, "a mapping key must be a plain string, not a mapping or list")
            key = f"<complex key on line {line}>"
        else:
            key = scalar.text
        first = top.key_lines.get(key)
        if first is not None:
            self.fail(line, top.path + (key,), f"duplicate key '{key}' (lines {first} and {line})")
        else:
            top.key_lines[key] = line
        top.key, top.key_line = key, line

    def document(self) -> Document | None:
        """The finished document; None for an empty one or one with findings."""
        if self.problems or self.root is None:
            return None
        return Document(self.file, self.root_line, self.root, self.locs)


def read_documents(text: str, file: str) -> tuple[list[Document], list[Problem]]:
    """All documents of one file, and every finding; empty documents are skipped."""
    documents: list[Document] = []
    problems: list[Problem] = []
    builder: _DocumentBuilder | None = None
    skipping = False      # an anchor or alias was found: read on to the document's end
    skip_depth = 0        # nesting while skipping, still held to the depth limit
    nodes = 0
    try:
        for event in yaml.parse(text, Loader=_LOADER):
            line = event.start_mark.line + 1 if event.start_mark else 0
            if isinstance(event, yaml.DocumentStartEvent):
                builder, skipping = _DocumentBuilder(file), False
                continue
            if isinstance(event, yaml.DocumentEndEvent) and builder is not None:
                problems.extend(builder.problems)
                doc = None if skipping else builder.document()
                if doc is not None:
                    documents.append(doc)
                builder = None
                continue
            if builder is None or isinstance(event, (yaml.StreamStartEvent, yaml.StreamEndEvent)):
                continue
            if isinstance(event, yaml.NodeEvent):
                nodes += 1
                if nodes > MAX_NODES:
                    raise _StopFile(Problem(file, line, "$", f"more than {MAX_NODES} values in one file"))
            anchor = getattr(event, "anchor", None)
            if not skipping and anchor is not None:       # an alias (*x) has one too: the name it refers to
                name = f"*{anchor}" if isinstance(event, yaml.AliasEvent) else f"&{anchor}"
                builder.fail(line, builder.next_path(),
                             f"anchors and aliases are not allowed (found {name}); write the value out")
                skipping, skip_depth = True, len(builder.stack)
            if skipping:
                if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                    skip_depth += 1
                    if skip_depth > MAX_DEPTH:
                        raise _StopFile(builder.too_deep(line))
                elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                    skip_depth -= 1
                continue
            _feed(builder, event, line)
    except _StopFile as stop:
        problems.extend(builder.problems if builder else [])
        problems.append(stop.problem)
    except yaml.YAMLError as exc:
        problems.extend(builder.problems if builder else [])
        problems.append(_syntax_problem(file, text, exc))
    return documents, problems


def _feed(builder: _DocumentBuilder, event: yaml.Event, line: int) -> None:
    """One structural or scalar event into the document being built."""
    if isinstance(event, yaml.MappingStartEvent):
        _check_collection_tag(builder, event, line, _MAP_TAGS)
        builder.open({}, line)
    elif isinstance(event, yaml.SequenceStartEvent):
        _check_collection_tag(builder, event, line, _SEQ_TAGS)
        builder.open([], line)
    elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
        builder.close()
    elif isinstance(event, yaml.ScalarEvent):
        value, scalar = _scalar(builder, event, line)
        builder.attach(value, line, scalar)


def _check_collection_tag(builder: _DocumentBuilder, event: Any, line: int, allowed: set[str | None]) -> None:
    if event.tag not in allowed:
        builder.fail(line, builder.next_path(), f"tag {_short_tag(event.tag)} is not allowed; "
                     "manifests use plain YAML mappings, lists and scalars only")


def _scalar(builder: _DocumentBuilder, event: yaml.ScalarEvent, line: int) -> tuple[Any, Scalar]:
    plain = event.tag is None and event.style in (None, "")
    if event.tag is None and builder.expecting_key():     # keys are names: `no:`, `1:`, `<<:` as written
        return event.value, Scalar(event.value, plain, _Y + "str")
    if event.tag is None:
        tag = _RESOLVER.resolve(yaml.ScalarNode, event.value, event.implicit)  # type: ignore[no-untyped-call]
    elif event.tag == "!":              # the non-specific tag: a string, whatever it looks like
        tag = _Y + "str"
    else:
        tag = event.tag
    scalar = Scalar(event.value, plain, tag)
    build = _SCALAR_BUILDERS.get(tag)
    if build is None:
        builder.fail(line, builder.next_path(), f"tag {_short_tag(tag)} is not allowed; "
                     "manifests use plain YAML mappings, lists and scalars only")
        return None, scalar
    node = yaml.ScalarNode(tag, event.value, style=event.style)     # marks: `line` already says where
    try:
        return build(_CONSTRUCTOR, node), scalar
    except (yaml.YAMLError, ValueError, OverflowError) as exc:   # e.g. 2024-13-45, !!int abc
        builder.fail(line, builder.next_path(),
                     f"{shown(event.value)} cannot be read as {_short_tag(tag)} ({exc}); quote it if it is text")
        return None, scalar


def _short_tag(tag: str | None) -> str:
    return "!!" + tag[len(_Y):] if tag and tag.startswith(_Y) else str(tag)


def _syntax_problem(file: str, text: str, exc: yaml.YAMLError) -> Problem:
    if isinstance(exc, yaml.reader.ReaderError):     # a character YAML does not allow
        # libyaml counts bytes of the UTF-8 text, PyYAML's own reader counts characters.
        if _LOADER is yaml.SafeLoader:
            line = text.count("\n", 0, exc.position) + 1
        else:
            line = text.encode("utf-8", "surrogatepass").count(b"\n", 0, exc.position) + 1
        char = chr(exc.character) if isinstance(exc.character, int) else str(exc.character)
        code = f"U+{ord(char[0]):04X}" if char else "?"
        return Problem(file, line, "$", f"invalid YAML: {exc.reason} (character {code})")
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    line = mark.line + 1 if mark is not None else 1
    if isinstance(exc, yaml.MarkedYAMLError):
        what = " ".join(part for part in (exc.context, exc.problem) if part)
    else:
        what = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return Problem(file, line, "$", f"invalid YAML: {what}")
