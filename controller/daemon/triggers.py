"""Triggers: everything that tells the daemon to look again.

Level-triggered, as in Kubernetes controllers: a trigger carries no instruction,
only a reason for the log; the reconcile pass re-reads desired and observed state
in full. Triggers arriving while a pass runs coalesce into one more pass, so the
controller's own changes (which libvirt reports as events too) cost at most one
extra, quiet pass, never a storm.

File events are debounced per path: an editor's save is several events (write,
rename, backup), and a half-written file must not be read (RELIABILITY F14).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from controller.manifest.files import is_manifest_name


class Triggers:
    """A wake-up with reasons: immediate pokes, and pokes due after a quiet period."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._cond = threading.Condition()
        self._ready: list[str] = []
        self._due: dict[str, float] = {}    # debounce key -> when it fires

    def poke(self, reason: str) -> None:
        with self._cond:
            self._ready.append(reason)
            self._cond.notify_all()

    def poke_after(self, key: str, delay: float) -> None:
        """Fire `key` once nothing more arrived for it during `delay` seconds."""
        with self._cond:
            self._due[key] = self._clock() + delay
            self._cond.notify_all()

    def cancel(self, key: str) -> None:
        """Drop `key` if it is still waiting for its quiet period."""
        with self._cond:
            self._due.pop(key, None)

    def wait(self, timeout: float | None) -> list[str]:
        """Block until a poke is due or `timeout` passes; return (and clear) the reasons."""
        deadline = None if timeout is None else self._clock() + timeout
        with self._cond:
            while True:
                now = self._clock()
                for key, when in list(self._due.items()):
                    if when <= now:
                        del self._due[key]
                        self._ready.append(key)
                if self._ready:
                    reasons, self._ready = self._ready, []
                    return reasons
                waits = [w - now for w in self._due.values()]
                if deadline is not None:
                    if now >= deadline:
                        return []
                    waits.append(deadline - now)
                self._cond.wait(min(waits) if waits else None)


def is_editor_noise(path: str) -> bool:
    """Editor and VCS temporaries: dotfiles (.web.yaml.swp, .#web.yaml), backups (web.yaml~),
    and anything that is not a manifest by name."""
    return not is_manifest_name(os.path.basename(path))


class FileWatch(FileSystemEventHandler):
    """watchdog on the manifest directories; every relevant change pokes `files:<path>`
    after the debounce period. Directories are watched, not files, so that a save by
    rename (write a temp file, rename it over the manifest) is seen as the destination's
    change, and a rename-away backup is not mistaken for a deletion: the pass after the
    quiet period sees the file back in place."""

    def __init__(self, paths: Sequence[str], triggers: Triggers, *, debounce: float) -> None:
        self._triggers = triggers
        self._debounce = debounce
        self._observer = Observer()
        for directory in sorted({self._directory(p) for p in paths}):
            self._observer.schedule(self, directory, recursive=True)

    @staticmethod
    def _directory(path: str) -> str:
        return path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path)) or "."

    def start(self) -> None:
        self._observer.start()

    def stop(self) -> None:
        self._observer.stop()
        self._observer.join(timeout=5)

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        paths = [os.fsdecode(event.src_path)]
        if getattr(event, "dest_path", None):
            paths.append(os.fsdecode(event.dest_path))
        relevant = [p for p in paths if event.is_directory or not is_editor_noise(p)]
        if relevant:
            # One key for all files: a pass reloads every manifest anyway, and a
            # `git checkout` touching many files must cause one pass, not many.
            self._triggers.poke_after("manifest files changed", self._debounce)
