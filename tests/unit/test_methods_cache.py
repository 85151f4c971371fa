"""The cache of compiled dataclass methods (controller/_methods.py): a record made
from the cache is the record made without it, and a bad cache file is only a miss."""

from __future__ import annotations

import dataclasses
import marshal
import os
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller import _methods

RECORDS = '''
from dataclasses import dataclass, field

@dataclass(frozen=True, order=True)
class Disk:
    """A record as the pipeline writes them."""
    volume: str
    size: int = 0
    tags: tuple[str, ...] = field(default_factory=tuple)
'''


@pytest.fixture
def define(monkeypatch: pytest.MonkeyPatch) -> Iterator[types.SimpleNamespace]:
    """Define RECORDS in a fresh module of the package, through a given cache."""
    made = []

    def run(cache: _methods._Cache, package: str = "controller", source: str = RECORDS) -> types.ModuleType:
        module = types.ModuleType(f"{package}._records_{len(made)}")
        monkeypatch.setitem(sys.modules, module.__name__, module)
        monkeypatch.setattr(dataclasses, "exec", cache.exec, raising=False)
        exec(compile(source, module.__name__, "exec", dont_inherit=True), module.__dict__)  # noqa: S102
        made.append(module)
        return module

    yield types.SimpleNamespace(run=run)


def _behaviour(module: types.ModuleType) -> tuple[object, ...]:
    disk = module.Disk("root", 5, ("a",))
    with pytest.raises(dataclasses.FrozenInstanceError):
        disk.size = 6  # type: ignore[misc]
    return (repr(disk), disk == module.Disk("root", 5, ("a",)), hash(disk) == hash(module.Disk("root", 5, ("a",))),
            disk < module.Disk("web"), module.Disk("x").tags, [f.name for f in dataclasses.fields(disk)],
            module.Disk.__init__.__annotations__)


def test_a_second_process_compiles_nothing_and_gets_the_same_records(tmp_path: Path, define) -> None:
    path = str(tmp_path / "methods.marshal")
    first = _methods._Cache(path)
    made = define.run(first)
    assert first.missed > 0 and not Path(path).exists()
    first.save(always=True)

    second = _methods._Cache(path)
    assert second.codes.keys() == first.new.keys()
    again = define.run(second)
    assert second.missed == 0
    assert second.codes == {} and len(second.taken) == len(first.new)   # handed out, then dropped
    assert _behaviour(again) == _behaviour(made) == (
        "Disk(volume='root', size=5, tags=('a',))", True, True, True, (), ["volume", "size", "tags"],
        # the methods are compiled as dataclasses compiles them, without our __future__ imports
        {"volume": str, "size": int, "tags": tuple[str, ...], "return": None})


@pytest.mark.parametrize("content", [b"", b"\x00garbage", marshal.dumps(("another program", {})),
                                     marshal.dumps(("iaasctl", "not a dict"))], ids=["empty", "garbage", "foreign", "bad"])
def test_a_bad_cache_file_is_compiled_afresh_and_replaced(tmp_path: Path, define, content: bytes) -> None:
    path = tmp_path / "methods.marshal"
    path.write_bytes(content)
    cache = _methods._Cache(str(path))
    made = define.run(cache)
    assert cache.missed > 0 and made.Disk("a") == made.Disk("a")
    cache.save(always=True)
    assert _methods._Cache(str(path)).codes.keys() == cache.new.keys()


def test_two_processes_saving_keep_what_each_compiled(tmp_path: Path, define) -> None:
    path = str(tmp_path / "methods.marshal")
    one, other = _methods._Cache(path), _methods._Cache(path)
    define.run(one)
    define.run(other, source=RECORDS.replace("class Disk", "class Nic").replace("volume: str", "mac: str"))
    one.save(always=True)
    other.save(always=True)
    assert _methods._Cache(path).codes.keys() == one.new.keys() | other.new.keys()


def test_nothing_is_written_where_bytecode_is_not(tmp_path: Path, define, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    path = tmp_path / "methods.marshal"
    cache = _methods._Cache(str(path))
    define.run(cache)
    cache.save()
    assert not path.exists()
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    cache.save()
    assert path.exists()


def test_an_unwritable_cache_costs_nothing_but_speed(tmp_path: Path, define) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    cache = _methods._Cache(str(blocker / "sub" / "methods.marshal"))   # its directory cannot be made
    define.run(cache)
    cache.save(always=True)
    assert list(tmp_path.iterdir()) == [blocker]


def test_other_packages_records_are_not_kept(tmp_path: Path, define) -> None:
    cache = _methods._Cache(str(tmp_path / "methods.marshal"))
    made = define.run(cache, package="someone_else")
    assert cache.missed == 0 and made.Disk("a").size == 0


def test_the_package_records_come_from_the_cache_built_for_it() -> None:
    """After `build()` (setup and the bench run it, as compileall), a new process that
    imports every module of the package, and may not write bytecode, compiles nothing."""
    cache = _methods.install()
    assert dataclasses.exec == cache.exec  # type: ignore[attr-defined]
    _methods.build()
    script = ("import dataclasses, importlib, pkgutil, controller\n"
              "for m in pkgutil.walk_packages(controller.__path__, 'controller.'):\n"
              "    m.name.endswith('__main__') or importlib.import_module(m.name)\n"
              "print(dataclasses.exec.__self__.missed, len(dataclasses.exec.__self__.taken))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                          env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"), cwd=Path(__file__).parents[2])
    missed, taken = map(int, done.stdout.split())
    assert missed == 0 and taken > 100


def test_dataclasses_imports_inspect_only_for_a_class_without_a_docstring() -> None:
    """The package's records all have docstrings, so `inspect` is never imported for
    them; a class without one still gets the docstring dataclasses writes, and the real
    `inspect` is the one everybody else imports."""
    script = ("import sys, controller\n"
              "print('inspect' in sys.modules)\n"
              "from dataclasses import dataclass\n"
              "@dataclass\n"
              "class Bare:\n"
              "    size: int = 0\n"
              "print(Bare.__doc__)\n"
              "import inspect\n"
              "print(inspect.signature(Bare), type(inspect).__name__)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                          cwd=Path(__file__).parents[2])
    assert done.stdout.splitlines() == ["False", "Bare(size: int = 0)", "(size: int = 0) -> None module"]
