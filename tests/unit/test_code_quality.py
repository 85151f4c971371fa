"""The package type-checks and lints clean: the same commands a developer runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
