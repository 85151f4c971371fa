"""A command's YAML half, done in a forked child while the command imports libvirt.

Before its first change a command needs two things that do not depend on each other:
its configuration and manifests (PyYAML's import, parsing, the schema checks: ~30 ms
cold) and libvirt with the rest of the pipeline (their imports: ~45 ms). One Python
process does them one after the other however many cores the host has, since an
import holds the GIL the whole time (a thread does not help: measured). So `start`
forks, before anything has started a thread, and the child does the YAML half and
sends the result down a pipe, while this process imports; `result()` picks it up.

What the child sends is the value or the ManifestInvalid or ConfigError it met,
exactly as loading in-process would have given it. Anything else (an unexpected
exception, a child killed before it answered, a result that does not unpickle)
means the work is done again here, where the error, if any, is raised the usual
way. No fork where it cannot help or cannot be safe: one core, a thread already
running (the child would inherit locks held by threads it does not have), or no
fork on this platform; then `result()` does the work in-process.
"""

from __future__ import annotations

import os
import pickle
import select
import sys
from collections.abc import Callable
from typing import Generic, TypeVar

from controller.errors import ConfigError, ManifestInvalid

T = TypeVar("T")


class Preload(Generic[T]):
    def __init__(self, work: Callable[[], T]) -> None:
        self._work = work
        self._child: tuple[int, int] | None = None     # (pid, read end of the pipe)
        if _may_fork():
            self._child = _fork(work)

    def ready(self) -> bool:
        """Whether `result` would not wait (the child has answered, or there is none)."""
        if self._child is None:
            return True
        readable, _, _ = select.select([self._child[1]], [], [], 0)
        return bool(readable)

    def result(self) -> T:
        """The work's value, or the error it raised; once."""
        child, self._child = self._child, None
        if child is None:
            return self._work()
        pid, fd = child
        with os.fdopen(fd, "rb") as pipe:
            data = pipe.read()
        os.waitpid(pid, 0)
        try:
            outcome, value = pickle.loads(data)  # noqa: S301 - our own child, over our own pipe
        except Exception:  # noqa: BLE001 - no answer (killed, crashed): do the work here
            return self._work()
        if outcome == "raised":
            raise value
        return value  # type: ignore[no-any-return]


def _may_fork() -> bool:
    if not hasattr(os, "fork") or not hasattr(os, "sched_getaffinity"):
        return False
    threading = sys.modules.get("threading")
    if threading is not None and threading.active_count() > 1:
        return False
    return len(os.sched_getaffinity(0)) > 1


def _fork(work: Callable[[], object]) -> tuple[int, int] | None:
    for stream in (sys.stdout, sys.stderr):
        stream.flush()         # nothing of the parent's left in the buffers the child copies
    read, write = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(read)
        os.close(write)
        return None
    if pid == 0:
        os.close(read)
        _child(work, write)
    os.close(write)
    return pid, read


def _child(work: Callable[[], object], fd: int) -> None:
    """Never returns: the child ends without Python's shutdown (no exit handlers, no
    buffers of the parent's written again)."""
    code = 1      # anything else raised ends the child here too: the parent does the work again
    try:
        try:
            outcome: tuple[str, object] = ("value", work())
        except (ManifestInvalid, ConfigError) as exc:
            outcome = ("raised", exc)
        data = pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL)
        with os.fdopen(fd, "wb") as pipe:
            pipe.write(data)
        code = 0
    finally:
        os._exit(code)
