"""Located values: one YAML document as plain data plus where each value was written.

Produced by `yamlsafe` (the first stage of the manifest pipeline) and read by every
later stage (`envelope`, `schema`, `yaml11`, `build`), so that any finding can name
`file:line: json.path`. Pure data; no parsing happens here.
"""

from __future__ import annotations

import reprlib
from collections.abc import Mapping
from dataclasses import dataclass

from controller.errors import Problem

# A position inside a document: keys and list indexes, as jsonschema's `absolute_path`.
JsonPath = tuple[str | int, ...]


@dataclass(frozen=True)
class Scalar:
    """How a scalar was spelled, to explain what YAML 1.1 made of it."""

    text: str        # the characters as written (after unescaping quoted styles)
    plain: bool      # unquoted and untagged: YAML 1.1 implicit typing applied
    tag: str         # the resolved tag, e.g. tag:yaml.org,2002:int


@dataclass(frozen=True)
class Loc:
    """Where one value sits.

    `line` is the line to point at for the value: a scalar's own line, and for a
    mapping or list that is the value of a key, the key's line (a block collection
    starts on the next line, but people look for `disks:`). `key_line` is the line of
    the key itself (equal to `line` for list items and the document root).
    """

    line: int
    key_line: int
    scalar: Scalar | None = None


@dataclass(frozen=True)
class Document:
    """One YAML document of a manifest file: its value tree and the location of every node."""

    file: str                        # as the user spelled it
    line: int                        # line of the document's root node
    value: object                    # dict / list / str / int / float / bool / None (/ date)
    locs: Mapping[JsonPath, Loc]

    def line_of(self, path: JsonPath) -> int:
        """The line of the value at `path`, or of its nearest located ancestor."""
        while path not in self.locs and path:
            path = path[:-1]
        loc = self.locs.get(path)
        return loc.line if loc else self.line

    def key_line_of(self, path: JsonPath) -> int:
        loc = self.locs.get(path)
        return loc.key_line if loc else self.line_of(path)

    def problem(self, path: JsonPath, message: str) -> Problem:
        """A finding about the value at `path`."""
        return Problem(self.file, self.line_of(path), format_path(path), message)

    def field_lines(self) -> dict[str, int]:
        """json path -> line, for every key and list item of the document."""
        return {format_path(path): loc.line for path, loc in self.locs.items() if path}


def format_path(path: JsonPath) -> str:
    """`("spec", "disks", 0, "volume")` -> `spec.disks[0].volume`; the root is `$`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out or "$"


_SHORT = reprlib.Repr()
_SHORT.maxstring = 80
_SHORT.maxother = 80


def shown(value: object) -> str:
    """A value quoted for a message, shortened: a user's 4 MiB string stays out of the log."""
    return _SHORT.repr(value)


def brief(text: str) -> str:
    """Text as written, shortened for a message."""
    return text if len(text) <= 80 else text[:60] + "..."
