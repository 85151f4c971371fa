"""Control records: the journal of in-flight operations (crash safety), suspensions
and requests for an immediate reconcile (written by the CLI, read by the daemon)."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass

from controller.model import Kind, Ref
from controller.state.core import OwnedRow, StoreCore

SCHEMA = """
CREATE TABLE IF NOT EXISTS journal (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL, name TEXT NOT NULL, action TEXT NOT NULL,
    source TEXT NOT NULL, protect INTEGER NOT NULL, started REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS suspended (
    kind TEXT NOT NULL, name TEXT NOT NULL, since REAL NOT NULL,
    PRIMARY KEY (kind, name)
);
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT, name TEXT, at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS daemon (
    key TEXT PRIMARY KEY, value TEXT NOT NULL
);
"""

_ALL = "*"   # kind and name of the global suspension


@dataclass(frozen=True)
class JournalEntry:
    """A multi-step operation begun and not yet finished; one left by a crash is finished by
    Session.recover."""

    id: int
    ref: Ref
    action: str
    source: str          # the manifest the object came from, for the ownership it gets on recovery
    protect: bool
    started: float


class Control(StoreCore):
    def _schemas(self) -> list[str]:
        return [*super()._schemas(), SCHEMA]

    # -- journal ------------------------------------------------------------------------

    def journal_begin(self, ref: Ref, action: str, *, source: str, protect: bool) -> int:
        """Written (and synced) before the first libvirt call of a multi-step operation;
        with the entries other workers write at the same moment, in one commit."""
        row = (ref.kind.value, ref.name, action, source, int(protect), time.time())
        return self._write_together(lambda db: int(db.execute(
            "INSERT INTO journal (kind, name, action, source, protect, started) VALUES (?, ?, ?, ?, ?, ?)",
            row).lastrowid or 0))

    def journal_end(self, entry: int, *, record: OwnedRow | None = None, synced: bool = True) -> None:
        """The operation is over; `record` the object it made in the same transaction
        (a commit is an fsync: one per object fewer), shared with what other workers
        write at the same moment. Not `synced`: see StoreCore._write_together; the
        entry, if a power loss takes its end, is recovered as if the run had stopped
        right after the change."""
        def end(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM journal WHERE id = ?", (entry,))
            if record is not None:
                self._record_in(db, record)

        self._write_together(end, synced=synced)

    def journal(self) -> list[JournalEntry]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, kind, name, action, source, protect, started FROM journal ORDER BY id").fetchall()
        return [JournalEntry(i, Ref(Kind(k), n), a, s, bool(p), t) for i, k, n, a, s, p, t in rows]

    # -- suspension ---------------------------------------------------------------------

    def suspend(self, ref: Ref | None) -> None:
        """Stop reconciling one object, or everything (None); nothing is deleted."""
        kind, name = (ref.kind.value, ref.name) if ref else (_ALL, _ALL)
        with self._write() as db:
            db.execute("INSERT OR IGNORE INTO suspended (kind, name, since) VALUES (?, ?, ?)",
                       (kind, name, time.time()))

    def resume(self, ref: Ref | None) -> None:
        """Resume one object, or (None) everything: the global and every single suspension."""
        with self._write() as db:
            if ref is None:
                db.execute("DELETE FROM suspended")
            else:
                db.execute("DELETE FROM suspended WHERE kind = ? AND name = ?", (ref.kind.value, ref.name))

    def suspended(self) -> tuple[bool, frozenset[Ref]]:
        """(everything suspended?, the objects suspended one by one)."""
        with self._lock:
            rows = self._db.execute("SELECT kind, name FROM suspended").fetchall()
        everything = any(k == _ALL for k, _ in rows)
        return everything, frozenset(Ref(Kind(k), n) for k, n in rows if k != _ALL)

    # -- requests -----------------------------------------------------------------------

    def request_reconcile(self, ref: Ref | None) -> None:
        with self._write() as db:
            db.execute("INSERT INTO requests (kind, name, at) VALUES (?, ?, ?)",
                       (ref.kind.value if ref else None, ref.name if ref else None, time.time()))

    def take_requests(self) -> list[Ref | None]:
        """Pending requests (None: everything), removed as they are read."""
        with self._write() as db:
            rows = db.execute("SELECT kind, name FROM requests ORDER BY id").fetchall()
            db.execute("DELETE FROM requests")
        return [Ref(Kind(k), n) if k else None for k, n in rows]

    # -- the daemon's own state ------------------------------------------------------------

    def set_daemon_state(self, **values: object) -> None:
        """What `iaasctl status` shows: pid, uri, connected, last pass and its result."""
        with self._write() as db:
            set_daemon_state(db, values)

    def daemon_state(self) -> dict[str, object]:
        with self._lock:
            rows = self._db.execute("SELECT key, value FROM daemon").fetchall()
        return {k: json.loads(v) for k, v in rows}


def set_daemon_state(db: sqlite3.Connection, values: Mapping[str, object]) -> None:
    db.executemany("INSERT INTO daemon (key, value) VALUES (?, ?)"
                   " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                   [(k, json.dumps(v)) for k, v in values.items()])
