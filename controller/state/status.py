"""Per-resource status, in the Kubernetes manner: conditions with reason, message and
last transition time; the generation (spec hash) desired and observed; retries and
the next retry; and a bounded table of events."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from controller.model import Kind, Ref
from controller.state.control import set_daemon_state as _set_daemon_state
from controller.state.core import StoreCore

SCHEMA = """
CREATE TABLE IF NOT EXISTS conditions (
    kind TEXT NOT NULL, name TEXT NOT NULL, type TEXT NOT NULL,
    status INTEGER NOT NULL, reason TEXT NOT NULL, message TEXT NOT NULL, since REAL NOT NULL,
    PRIMARY KEY (kind, name, type)
);
CREATE TABLE IF NOT EXISTS resource_status (
    kind TEXT NOT NULL, name TEXT NOT NULL,
    generation TEXT, observed_generation TEXT,
    retries INTEGER NOT NULL DEFAULT 0, next_retry REAL, permanent INTEGER NOT NULL DEFAULT 0,
    last_error TEXT, updated REAL NOT NULL,
    PRIMARY KEY (kind, name)
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL, kind TEXT NOT NULL, name TEXT NOT NULL,
    type TEXT NOT NULL, reason TEXT NOT NULL, message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_object ON events (kind, name, id);
"""

EVENTS_KEPT = 10_000   # oldest events beyond this are dropped as new ones arrive
CONDITION_TYPES = ("Ready", "Reconciling", "Stalled", "Drifted", "RestartRequired")


@dataclass(frozen=True)
class Condition:
    """One Kubernetes-style condition of a resource (Ready, Stalled, ...) as the daemon last set it."""

    type: str
    status: bool
    reason: str
    message: str
    since: float           # wall-clock time of the last transition of `status`


@dataclass(frozen=True)
class ResourceStatus:
    """The daemon's progress on one resource: the generations wanted and reached, and its retries."""

    ref: Ref
    generation: str | None           # hash of the spec the manifests ask for
    observed_generation: str | None  # hash of the spec the controller last converged
    retries: int
    next_retry: float | None         # wall-clock time
    permanent: bool                  # not retried until the manifest changes
    last_error: str | None


@dataclass(frozen=True)
class Event:
    """Something that happened to a resource, for `iaasctl events` and `describe`; `at` is wall-clock time."""

    at: float
    ref: Ref
    type: str              # Normal | Warning
    reason: str
    message: str
    id: int = 0            # its place in the table: newer events have higher ids (for paging)


class StatusRecords(StoreCore):
    def _schemas(self) -> list[str]:
        return [*super()._schemas(), SCHEMA]

    def set_conditions(self, ref: Ref, values: Mapping[str, tuple[bool, str, str]]) -> set[str]:
        """Record conditions of one object, `type -> (status, reason, message)`, in one
        transaction: a reader never sees some of them from before and some from after
        (Ready converged while Reconciling still says applying). A transition time moves
        only when its status flips. Returns the types that flipped (or are new)."""
        with self._write() as db:
            return _set_conditions(db, ref, values, time.time())

    def record_pass(self, *, forget: Iterable[Ref], conditions: Mapping[Ref, Mapping[str, tuple[bool, str, str]]],
                    statuses: Iterable[ResourceStatus], daemon: Mapping[str, object]) -> None:
        """Everything a daemon pass concluded, in one transaction (one fsync): the status
        of objects it deleted dropped, changed conditions and resource statuses, and the
        daemon's state (its pass count last). A reader (`describe`, in a snapshot) sees one
        pass's verdict on every object, never a mix of two."""
        now = time.time()
        with self._write() as db:
            for ref in forget:
                _forget_status(db, ref)
            for ref, values in conditions.items():
                _set_conditions(db, ref, values, now)
            for status in statuses:
                _set_resource_status(db, status, now)
            _set_daemon_state(db, daemon)

    def conditions(self, ref: Ref) -> list[Condition]:
        with self._lock:
            rows = self._db.execute(
                "SELECT type, status, reason, message, since FROM conditions WHERE kind = ? AND name = ?",
                (ref.kind.value, ref.name)).fetchall()
        order = {t: i for i, t in enumerate(CONDITION_TYPES)}
        found = [Condition(t, bool(s), r, m, since) for t, s, r, m, since in rows]
        return sorted(found, key=lambda c: order.get(c.type, len(order)))

    def resource_statuses(self) -> dict[Ref, ResourceStatus]:
        with self._lock:
            rows = self._db.execute(
                "SELECT kind, name, generation, observed_generation, retries, next_retry, permanent, last_error"
                " FROM resource_status").fetchall()
        return {Ref(Kind(k), n): ResourceStatus(Ref(Kind(k), n), g, o, r, nr, bool(p), e)
                for k, n, g, o, r, nr, p, e in rows}

    def add_event(self, ref: Ref, type_: str, reason: str, message: str) -> None:
        with self._write() as db:
            cur = db.execute("INSERT INTO events (at, kind, name, type, reason, message) VALUES (?, ?, ?, ?, ?, ?)",
                             (time.time(), ref.kind.value, ref.name, type_, reason, message))
            db.execute("DELETE FROM events WHERE id <= ?", (int(cur.lastrowid or 0) - EVENTS_KEPT,))

    def events(self, ref: Ref | None = None, *, kind: Kind | None = None, limit: int = 50,
               before: int | None = None) -> list[Event]:
        """The most recent events (of one object, or of one kind), newest last; with
        `before`, those older than the event of that id (the page before it)."""
        kind_value = ref.kind.value if ref else (kind.value if kind else None)
        name = ref.name if ref else None
        with self._lock:
            rows = self._db.execute(
                "SELECT id, at, kind, name, type, reason, message FROM events"
                " WHERE (? IS NULL OR kind = ?) AND (? IS NULL OR name = ?) AND (? IS NULL OR id < ?)"
                " ORDER BY id DESC LIMIT ?",
                (kind_value, kind_value, name, name, before, before, limit)).fetchall()
        return [Event(at, Ref(Kind(k), n), t, r, m, i) for i, at, k, n, t, r, m in reversed(rows)]


def _set_conditions(db: sqlite3.Connection, ref: Ref, values: Mapping[str, tuple[bool, str, str]],
                    now: float) -> set[str]:
    flipped = set()
    for type_, (status, reason, message) in values.items():
        row = db.execute("SELECT status FROM conditions WHERE kind = ? AND name = ? AND type = ?",
                         (ref.kind.value, ref.name, type_)).fetchone()
        if row is None or bool(row[0]) != status:
            flipped.add(type_)
        db.execute(
            """INSERT INTO conditions (kind, name, type, status, reason, message, since)
               VALUES (?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (kind, name, type) DO UPDATE SET status = excluded.status,
                   reason = excluded.reason, message = excluded.message,
                   since = CASE WHEN conditions.status = excluded.status THEN conditions.since
                                ELSE excluded.since END""",
            (ref.kind.value, ref.name, type_, int(status), reason, message, now))
    return flipped


def _forget_status(db: sqlite3.Connection, ref: Ref) -> None:
    for table in ("conditions", "resource_status"):
        db.execute(f"DELETE FROM {table} WHERE kind = ? AND name = ?", (ref.kind.value, ref.name))


def _set_resource_status(db: sqlite3.Connection, status: ResourceStatus, now: float) -> None:
    ref = status.ref
    db.execute(
        """INSERT INTO resource_status (kind, name, generation, observed_generation, retries, next_retry,
                                        permanent, last_error, updated)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (kind, name) DO UPDATE SET generation = excluded.generation,
               observed_generation = excluded.observed_generation, retries = excluded.retries,
               next_retry = excluded.next_retry, permanent = excluded.permanent,
               last_error = excluded.last_error, updated = excluded.updated""",
        (ref.kind.value, ref.name, status.generation, status.observed_generation, status.retries,
         status.next_retry, int(status.permanent), status.last_error, now))
