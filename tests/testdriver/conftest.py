"""Tier 2: the real libvirt API through libvirt's in-process test driver.

The test driver keeps its objects only while a connection is open, so the
`session` fixture's connection spans the test; CLI invocations inside the test
open their own connections to the same in-memory host.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from controller.adapter import Libvirt
from controller.daemon import Daemon
from controller.model import Kind, Ref
from controller.observe import observe
from controller.reconcile import Session
from controller.state import StateStore
from tests.conftest import wait_for


def settle(run: Running) -> None:
    """Wait until a pass that started after this call has finished."""
    passes = run.daemon.passes
    run.daemon.triggers.poke("test: settle")
    wait_for("a pass after the change", lambda: run.daemon.passes > passes)


@dataclass
class Running:
    daemon: Daemon
    thread: threading.Thread
    specs: Path
    session: Session
    result: list[int]

    def store(self) -> StateStore:
        return self.session.store

    def state(self, name: str = "t-web") -> str | None:
        live = observe(self.session.client).objects.get(Ref(Kind.VM, name))
        return live.state if live else None

    def condition(self, ref: Ref, type_: str) -> tuple[bool, str] | None:
        found = {c.type: c for c in self.store().conditions(ref)}
        return (found[type_].status, found[type_].reason) if type_ in found else None

    def events(self, ref: Ref) -> list[str]:
        return [e.reason for e in self.store().events(ref)]

    def passes_after(self, count: int) -> bool:
        return self.daemon.passes > count


@pytest.fixture
def start_daemon(session: Session, write_manifests) -> Iterator[Callable[..., Running]]:  # type: ignore[no-untyped-def]
    started: list[Running] = []

    def start(files: dict[str, str], *, connect: Callable[[str], Libvirt] = Libvirt, **config: Any) -> Running:
        specs = write_manifests(files)
        settings = dict(debounce=0.1, delete_grace=1.0, resync_interval=60.0, backoff_base=0.2, backoff_max=2.0)
        settings.update(config)
        daemon = Daemon([str(specs)], replace(session.config, **settings), connect=connect)
        result: list[int] = []
        thread = threading.Thread(target=lambda: result.append(daemon.run()), daemon=True)
        thread.start()
        running = Running(daemon, thread, specs, session, result)
        started.append(running)
        wait_for("the first pass", lambda: daemon.passes >= 1)
        wait_for("the first pass's background changes recorded", lambda: not daemon.inflight)
        passes = daemon.passes
        daemon.triggers.poke("test: started")
        wait_for("a pass after them", lambda: daemon.passes > passes)
        return running

    yield start
    for running in started:
        running.daemon.stop()
        running.thread.join(timeout=10)
