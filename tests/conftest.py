"""Shared fixtures. The real-host tier lives in tests/realhost and has its own conftest."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.config import Config
from controller.reconcile import Session

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    """A Session on libvirt's in-process test driver with a private state directory.
    The test driver's state lives as long as a connection is open: each test starts
    from libvirt's default fixture (domain `test`, network `default`, pool `default-pool`)."""
    config = Config(connect="test:///default", state_dir=str(tmp_path / "state"), shutdown_timeout=2.0,
                    console_log_dir="/var/log/iaasctl-test")
    with Session.open(config) as s:
        yield s


@pytest.fixture
def write_manifests(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Write manifest files under tmp_path/specs and return that directory."""
    root = tmp_path / "specs"

    def write(files: dict[str, str]) -> Path:
        root.mkdir(exist_ok=True)
        for name, text in files.items():
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        return root

    return write


def wait_for(what: str, probe: Callable[[], Any], *, timeout: float = 15.0, every: float = 0.05) -> Any:
    """Poll until probe() returns something truthy; on timeout, say what was last seen.
    (Tests wait for convergence this way: never a fixed sleep that only a fast machine passes.)"""
    deadline = time.monotonic() + timeout
    seen: Any = None
    while time.monotonic() < deadline:
        seen = probe()
        if seen:
            return seen
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last seen: {seen!r}")


def under_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def transactions(store: Any) -> list[tuple[bool, list[str]]]:
    """Every transaction a StateStore commits from now on, as (synced, its statements):
    synced when it ended with an fsync (synchronous=FULL in effect at its COMMIT), not
    when it was left for the next synced commit to make durable (NORMAL, in WAL mode)."""
    full = [store._db.execute("PRAGMA synchronous").fetchone()[0] == 2]
    statements: list[str] = []
    seen: list[tuple[bool, list[str]]] = []

    def trace(sql: str) -> None:
        text = " ".join(sql.split())
        squeezed = text.upper().replace(" ", "")
        if squeezed.startswith("PRAGMASYNCHRONOUS="):
            full[0] = squeezed.endswith("FULL")
        elif squeezed == "COMMIT":
            if statements:   # not a read snapshot's end
                seen.append((full[0], list(statements)))
            statements.clear()
        elif not squeezed.startswith(("BEGIN", "SAVEPOINT", "RELEASE", "SELECT", "PRAGMA")):
            statements.append(text)

    store._db.set_trace_callback(trace)
    return seen
