"""The package type-checks and lints clean: the same commands a developer runs."""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import controller

REPO = Path(__file__).resolve().parents[2]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, check=False)


def test_mypy() -> None:
    done = run("mypy", "controller")
    assert done.returncode == 0, done.stdout + done.stderr


def test_ruff() -> None:
    done = run("ruff", "check", "controller", "tests", "bench")
    assert done.returncode == 0, done.stdout + done.stderr


def test_only_the_adapter_imports_libvirt() -> None:
    """The pipeline's layering (STYLE.md): libvirt stays behind controller/adapter/."""
    adapter = REPO / "controller" / "adapter"
    offenders = [
        str(path.relative_to(REPO)) for path in (REPO / "controller").rglob("*.py")
        if adapter not in path.parents and any(
            line.strip() in ("import libvirt",) or line.strip().startswith("from libvirt")
            for line in path.read_text().splitlines())
    ]
    assert offenders == []


def test_every_dataclass_has_its_own_docstring() -> None:
    """A dataclass without a docstring gets one made from inspect.signature(cls) when it is
    defined: start-up cost for every command (~3 ms for this package), and no documentation."""
    modules = [importlib.import_module(m.name) for m in pkgutil.walk_packages(controller.__path__, "controller.")
               if not m.name.endswith(".__main__")]   # __main__ runs the CLI
    offenders = sorted(
        f"{module.__name__}.{value.__qualname__}" for module in modules for value in vars(module).values()
        if isinstance(value, type) and dataclasses.is_dataclass(value) and value.__module__ == module.__name__
        and (value.__doc__ or "").startswith(value.__name__ + "(")
    )
    assert offenders == [], (
        "dataclasses without a docstring of their own (dataclasses computes inspect.signature for "
        f"each at import, a start-up cost, and they are undocumented): {', '.join(offenders)}")
