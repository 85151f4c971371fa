"""Compiled dataclass methods, kept between runs as Python keeps .pyc files.

Every record of the pipeline is a frozen dataclass (STYLE.md), and `@dataclass`
writes each method it adds (__init__, __repr__, __eq__, __hash__, and __setattr__
and __delattr__ for frozen classes) as source text that it compiles on every
import: 0.1 ms a method, 0.8 ms a frozen class on Python 3.11, 47 ms of a cold
`apply` for the 52 records it imports. The text depends only on the class,
so its compiled code can be kept. `install()` gives the `dataclasses` module an
`exec` that looks the text up in a cache file under this package's __pycache__
first, and compiles (and remembers) only what is not there; for classes of other
packages it is plain `exec`. The methods are the same functions either way: only
where their code objects come from changes. A missing, stale, foreign or truncated
file is compiled afresh; one that cannot be written costs speed, never an error.
The file has the trust of the .pyc files beside it: whoever can write one can
write the other.
"""

from __future__ import annotations

import builtins
import marshal
import os
import sys
from types import ModuleType
from typing import Any

PACKAGE = "controller"
CACHE = os.path.join(os.path.dirname(__file__), "__pycache__",
                     f"dataclass-methods.{sys.implementation.cache_tag}.marshal")
HEADER = f"iaasctl dataclass methods 2, Python {sys.version}"   # 2: compiled with no __future__ of ours
LIMIT = 2000   # entries; past it (many edits of the records) the file starts over


class _Cache:
    """The file's code objects are handed out once each and then dropped: a daemon
    does not keep the compiled text of every method next to the methods themselves."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.codes: dict[str, Any] = _read(path)   # from the file, until a class takes its code
        self.taken: set[int] = set()               # hash() of the texts taken from it
        self.new: dict[str, Any] = {}              # compiled here: texts the file does not have

    @property
    def missed(self) -> int:
        return len(self.new)

    def exec(self, source: Any, globals: dict[str, Any] | None = None,   # noqa: A002 - exec's own names
             locals: dict[str, Any] | None = None) -> None:             # noqa: A002
        if not isinstance(source, str) or globals is None \
                or str(globals.get("__name__", "")).partition(".")[0] != PACKAGE:
            # compiled here, exec would take this module's `from __future__ import
            # annotations` (the methods' annotations would be strings): as dataclasses does
            builtins.exec(_compile(source) if isinstance(source, str) else source, globals, locals)
            return
        code = self.codes.pop(source, None)
        if code is not None:
            self.taken.add(hash(source))
        else:
            code = self.new.get(source)
        if code is None:
            code = _compile(source)
            # The same text a second time (two classes with the same fields) is
            # compiled again, but it is in the file: no reason to write it.
            if hash(source) not in self.taken:
                self.new[source] = code
        builtins.exec(code, globals, locals)

    def save(self, *, always: bool = False) -> None:
        """Add what this process compiled to the file, unless the environment asks that
        no bytecode be written (PYTHONDONTWRITEBYTECODE), as for .pyc files; `always`
        writes it in any case (build())."""
        if not always and (not self.new or sys.dont_write_bytecode):
            return
        codes = _read(self.path)          # as it is now: another process may have added to it
        codes.update(self.new)
        if len(codes) > LIMIT:            # many edits of the records: start over
            codes = dict(self.new)
        from pathlib import Path

        from controller.filecache import replace_file   # only here: pickle's import is not every command's

        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
        except OSError:
            return
        replace_file(Path(self.path), marshal.dumps((HEADER, codes)), mode=0o644)


def _compile(source: str) -> Any:
    """What exec(source) compiles in dataclasses, which has no __future__ imports."""
    return compile(source, "<string>", "exec", dont_inherit=True)


def _read(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            # loads(read()): load(handle) reads the file a few bytes at a time (12 ms, not 1)
            header, codes = marshal.loads(handle.read())
    except Exception:  # noqa: BLE001 - absent, truncated or not ours: compile afresh
        return {}
    if header != HEADER or not isinstance(codes, dict):
        return {}
    return codes


def install(path: str = CACHE) -> _Cache:
    """Route the `dataclasses` module's exec through a cache at `path`, once per
    process; the cache is written at exit if this process compiled anything."""
    import atexit

    dataclasses = _dataclasses()
    current = getattr(dataclasses, "exec", None)
    installed = getattr(current, "__self__", None)
    if isinstance(installed, _Cache):
        return installed
    cache = _Cache(path)
    dataclasses.exec = cache.exec  # type: ignore[attr-defined]
    atexit.register(cache.save)
    return cache


def _dataclasses() -> Any:
    """`import dataclasses` without importing `inspect` for it, which with ast, dis and
    tokenize is ~9 ms of every command: dataclasses calls it only to write a docstring
    for a class that has none (ours have theirs). It gets a stand-in that imports the
    real module the first time it is used; whoever else imports `inspect` gets the real
    one from the start."""
    if "dataclasses" not in sys.modules and "inspect" not in sys.modules:
        stand_in = _InspectOnUse("inspect")
        sys.modules["inspect"] = stand_in
        try:
            import dataclasses
        finally:
            if sys.modules.get("inspect") is stand_in:
                del sys.modules["inspect"]
    import dataclasses
    return dataclasses


class _InspectOnUse(ModuleType):
    def __getattr__(self, name: str) -> Any:
        import inspect     # the real one: the stand-in left sys.modules once dataclasses had it

        return getattr(inspect, name)


def build() -> None:
    """Import every module of the package and write the cache: what compileall does
    for the .pyc files, for an install or a benchmark made where bytecode is not
    written on its own."""
    import importlib
    import pkgutil

    cache = install()
    package = importlib.import_module(PACKAGE)
    for module in pkgutil.walk_packages(package.__path__, f"{PACKAGE}."):
        if not module.name.endswith(".__main__"):     # that one runs the command line
            importlib.import_module(module.name)
    cache.save(always=True)
