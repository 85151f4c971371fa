"""State store core: the SQLite connection, ownership records and run history.

Holds what libvirt cannot: which objects the controller owns (and from which
manifest), the hash of the spec last applied, the last result and error per
object, and a history of runs. `get` and `describe` merge it with live state.

The directory is 0700 and the files 0600 whatever the umask. Writers take the
lock of this object (worker threads share one connection) and SQLite's
busy_timeout covers other processes.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import sqlite3
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from controller.errors import LockHeld
from controller.model import Kind, OwnedRecord, Ref

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    uuid TEXT,
    source TEXT NOT NULL,
    protect INTEGER NOT NULL DEFAULT 0,
    spec_hash TEXT,
    spec_json TEXT,
    owned_since REAL NOT NULL,
    last_applied REAL,
    last_action TEXT,
    last_result TEXT,
    last_error TEXT,
    updated REAL NOT NULL,
    PRIMARY KEY (kind, name)
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    command TEXT NOT NULL,
    started REAL NOT NULL,
    finished REAL,
    result TEXT,
    summary TEXT
);
CREATE TABLE IF NOT EXISTS run_changes (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    action TEXT NOT NULL,
    result TEXT NOT NULL,
    error TEXT,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS run_changes_object ON run_changes (kind, name, at);
"""

HISTORY_LIMIT = 500  # runs kept; older ones (and their changes) are dropped


@dataclass(frozen=True)
class ObjectStatus:
    """What the state store records about one owned object, for `get` and `describe`;
    `spec` is the document last applied, times are Unix seconds."""

    ref: Ref
    uuid: str | None
    source: str
    protect: bool
    spec: dict[str, Any] | None
    last_applied: float | None
    last_action: str | None
    last_result: str | None
    last_error: str | None


@dataclass(frozen=True)
class ChangeRecord:
    """One change of a past run, from the store's history; `at` is in Unix seconds."""

    run_id: int
    ref: Ref
    action: str
    result: str
    error: str | None
    at: float


# One ownership record as written: see owned_row.
OwnedRow = tuple[Any, ...]


def owned_row(ref: Ref, *, source: str, protect: bool, uuid: str | None = None,
              spec_hash: str | None = None, spec: dict[str, Any] | None = None) -> OwnedRow:
    """An ownership record, made now, to be written by record() or with the end of a
    journaled operation (Control.journal_end). A None uuid keeps the one recorded."""
    now = time.time()
    return (ref.kind.value, ref.name, uuid, source, int(protect), spec_hash,
            json.dumps(spec) if spec is not None else None, now, now, now)


class _Queued:
    """Work waiting for a shared commit (StoreCore._write_together), and how it went."""

    __slots__ = ("work", "synced", "done", "result", "error")

    def __init__(self, work: Callable[[sqlite3.Connection], Any], *, synced: bool = True) -> None:
        self.work = work
        self.synced = synced   # see StoreCore._write_together
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None


class Run:
    """A run begun in the store (StoreCore.begin_run); `id` is its row's, written by then."""

    __slots__ = ("_settle",)

    def __init__(self, settle: Callable[[], int]) -> None:
        self._settle = settle

    @property
    def id(self) -> int:
        return self._settle()


class StoreCore:
    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.dir = Path(state_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        self.path = self.dir / "state.db"
        if not self.path.exists():
            fd = os.open(self.path, os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW, 0o600)
            os.close(fd)
        self._lock = threading.RLock()
        self._queued: deque[_Queued] = deque()   # see _write_together
        self._db = sqlite3.connect(self.path, timeout=10, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._synced = True     # the connection's setting now: see _sync
        self._db.execute("PRAGMA busy_timeout=10000")
        # The tables are made in one transaction, and only when the database does not
        # already have this version of them: a commit is an fsync (synchronous=FULL),
        # and one per table part cost a first command ~10 ms.
        script = "\n".join(self._schemas())
        version = zlib.crc32(script.encode()) & 0x7FFFFFFF
        if self._db.execute("PRAGMA user_version").fetchone()[0] != version:
            self._db.executescript(f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version={version};\nCOMMIT;")
        for suffix in ("", "-wal", "-shm"):
            side = Path(f"{self.path}{suffix}")
            if side.exists():
                os.chmod(side, 0o600)

    def _schemas(self) -> list[str]:
        """Each part of the store adds its own tables (see the subclasses)."""
        return [SCHEMA]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Reads inside see the store as of one moment: a daemon pass committed meanwhile
        (`record_pass`) is seen whole or not at all. For readers only: a write inside fails."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                yield
            finally:
                self._db.execute("COMMIT")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._sync(True)
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _write_together(self, work: Callable[[sqlite3.Connection], T], *, synced: bool = True) -> T:
        """`work` in a transaction shared with the work other threads queue meanwhile:
        one commit, so one fsync, for all of them (group commit). The executor's workers
        write a journal entry at the start and at the end of each change, often at the
        same moment: one after the other, the eighth of a wave of eight waited for seven
        fsyncs (12 ms at N=10). Each caller still returns only once its own work is
        committed; work that raises is undone alone and raises in its own caller.

        Work that is not `synced` is committed without an fsync of its own when nothing
        in its batch needs one: it is on disk once the next synced commit is (the WAL is
        written in order and synced whole), safe from a crash of this process at once,
        and from a power loss after that next commit. For what a lost write can be
        derived again: the record a change leaves, which the change's journal entry
        (synced before the change began) and libvirt recover (Session.recover,
        sync_records), and which the run's end (synced) makes durable before the
        command reports it."""
        mine = _Queued(work, synced=synced)
        self._queued.append(mine)
        with self._lock:
            if not mine.done:   # not in the batch of a commit that ran meanwhile: lead one
                batch = []
                while self._queued:
                    batch.append(self._queued.popleft())
                self._commit(batch)
        if mine.error is not None:
            raise mine.error
        return mine.result  # type: ignore[no-any-return]

    def _commit(self, batch: list[_Queued]) -> None:
        db = self._db
        try:
            self._sync(any(item.synced for item in batch))
            db.execute("BEGIN IMMEDIATE")
            for item in batch:
                db.execute("SAVEPOINT item")
                try:
                    item.result = item.work(db)
                except Exception as exc:  # noqa: BLE001 - raised in the caller that queued it
                    db.execute("ROLLBACK TO item")
                    item.error = exc
                db.execute("RELEASE item")
            db.execute("COMMIT")
        except BaseException as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            for item in batch:
                item.error = item.error or exc
            if not isinstance(exc, Exception):
                raise
        finally:
            for item in batch:
                item.done = True

    def _sync(self, synced: bool) -> None:
        """The next commit with an fsync (synchronous=FULL) or without (NORMAL: in WAL
        mode it is durable with the next FULL commit). Outside a transaction only."""
        if synced != self._synced:
            self._db.execute("PRAGMA synchronous=FULL" if synced else "PRAGMA synchronous=NORMAL")
            self._synced = synced

    # -- ownership ------------------------------------------------------------------

    def owned(self) -> dict[Ref, OwnedRecord]:
        with self._lock:
            rows = self._db.execute("SELECT kind, name, source, protect, spec_hash FROM objects").fetchall()
        return {Ref(Kind(k), n): OwnedRecord(source=s, protect=bool(p), spec_hash=h) for k, n, s, p, h in rows}

    def record_owned(
        self, ref: Ref, *, source: str, protect: bool, uuid: str | None = None,
        spec_hash: str | None = None, spec: dict[str, Any] | None = None,
    ) -> None:
        self.record(owned_row(ref, source=source, protect=protect, uuid=uuid, spec_hash=spec_hash, spec=spec))

    def record(self, row: OwnedRow, *, synced: bool = True) -> None:
        """In a commit shared with other workers' writes (see _write_together, and
        there for `synced`)."""
        self._write_together(lambda db: self._record_in(db, row), synced=synced)

    @staticmethod
    def _record_in(db: sqlite3.Connection, row: OwnedRow) -> None:
        """Write an ownership record, within the caller's transaction."""
        db.execute(
            """INSERT INTO objects (kind, name, uuid, source, protect, spec_hash, spec_json, owned_since,
                                    last_applied, updated)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (kind, name) DO UPDATE SET
                   uuid = COALESCE(excluded.uuid, objects.uuid), source = excluded.source,
                   protect = excluded.protect, spec_hash = excluded.spec_hash,
                   spec_json = excluded.spec_json, last_applied = excluded.last_applied,
                   updated = excluded.updated""",
            row,
        )

    def forget(self, ref: Ref, *, synced: bool = True) -> None:
        """In a commit shared with other workers' writes (see _write_together, and
        there for `synced`)."""
        self._write_together(lambda db: self._forget_in(db, ref), synced=synced)

    @staticmethod
    def _forget_in(db: sqlite3.Connection, ref: Ref) -> None:
        """Drop an object's record, within the caller's transaction."""
        db.execute("DELETE FROM objects WHERE kind = ? AND name = ?", (ref.kind.value, ref.name))

    def status(self, ref: Ref) -> ObjectStatus | None:
        found = self.statuses(kind=ref.kind, name=ref.name)
        return found[0] if found else None

    def statuses(self, *, kind: Kind | None = None, name: str | None = None) -> list[ObjectStatus]:
        query = ("SELECT kind, name, uuid, source, protect, spec_json, last_applied, last_action, last_result,"
                 " last_error FROM objects WHERE (? IS NULL OR kind = ?) AND (? IS NULL OR name = ?)"
                 " ORDER BY kind, name")
        k = kind.value if kind else None
        with self._lock:
            rows = self._db.execute(query, (k, k, name, name)).fetchall()
        return [
            ObjectStatus(Ref(Kind(r[0]), r[1]), r[2], r[3], bool(r[4]), json.loads(r[5]) if r[5] else None,
                         r[6], r[7], r[8], r[9])
            for r in rows
        ]

    # -- runs and results ------------------------------------------------------------

    def begin_run(self, command: str) -> Run:
        """A run, whose row goes in with the store's next shared commit (see
        _write_together) instead of a commit of its own: a create's journal entry,
        synced before its first step, or the record a delete or an update leaves right
        after its change. A commit is an fsync, and this one stood between a plan and
        its first change: 1-12 ms under the disk writes of booting guests
        (docs/performance.md, sixteenth round). A run that writes nothing else gets its
        row when its id is first asked for. The runs are history only; what a crash
        cut short is finished from the journal and the records (Session.recover)."""
        started = time.time()

        def insert(db: sqlite3.Connection) -> int:
            run_id = int(db.execute("INSERT INTO runs (command, started) VALUES (?, ?)",
                                    (command, started)).lastrowid or 0)
            db.execute("DELETE FROM run_changes WHERE run_id <= ?", (run_id - HISTORY_LIMIT,))
            db.execute("DELETE FROM runs WHERE id <= ?", (run_id - HISTORY_LIMIT,))
            return run_id

        item = _Queued(insert, synced=False)   # history: durable with the run's end
        self._queued.append(item)
        return Run(lambda: int(self._settled(item)))

    def _settled(self, item: _Queued) -> Any:
        """A queued write's result, committed now (alone) if no shared commit has taken it yet."""
        with self._lock:
            if not item.done:
                self._queued.remove(item)    # under the lock, as every leader takes from the queue
                self._commit([item])
        if item.error is not None:
            raise item.error
        return item.result

    def finish_run(self, run_id: int, *, result: str, summary: dict[str, Any],
                   results: Iterable[tuple[Ref, str, bool, str | None]] = ()) -> None:
        """End a run; `results` (see record_results) are recorded in the same commit."""
        with self._write() as db:
            self._results_in(db, run_id, results)
            db.execute("UPDATE runs SET finished = ?, result = ?, summary = ? WHERE id = ?",
                       (time.time(), result, json.dumps(summary, sort_keys=True), run_id))

    def record_results(self, run_id: int, results: Iterable[tuple[Ref, str, bool, str | None]]) -> None:
        """The outcome of each change of a run, as (ref, action, ok, error): one
        transaction, however many changes (a commit is an fsync)."""
        with self._write() as db:
            self._results_in(db, run_id, results)

    @staticmethod
    def _results_in(db: sqlite3.Connection, run_id: int, results: Iterable[tuple[Ref, str, bool, str | None]]
                    ) -> None:
        now = time.time()
        rows = [(ref, action, "ok" if ok else "failed", error) for ref, action, ok, error in results]
        if not rows:
            return
        db.executemany("INSERT INTO run_changes (run_id, kind, name, action, result, error, at)"
                       " VALUES (?, ?, ?, ?, ?, ?, ?)",
                       [(run_id, ref.kind.value, ref.name, action, result, error, now)
                        for ref, action, result, error in rows])
        db.executemany("UPDATE objects SET last_action = ?, last_result = ?, last_error = ?, updated = ?"
                       " WHERE kind = ? AND name = ?",
                       [(action, result, error, now, ref.kind.value, ref.name)
                        for ref, action, result, error in rows])

    def history(self, ref: Ref, *, limit: int = 10) -> list[ChangeRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT run_id, action, result, error, at FROM run_changes WHERE kind = ? AND name = ?"
                " ORDER BY at DESC LIMIT ?", (ref.kind.value, ref.name, limit)).fetchall()
        return [ChangeRecord(r[0], ref, r[1], r[2], r[3], r[4]) for r in rows]

    def runs(self, *, limit: int = 20, before: int | None = None) -> list[dict[str, Any]]:
        """The latest runs, newest first; with `before`, those older than the run of that id."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, command, started, finished, result, summary FROM runs WHERE (? IS NULL OR id < ?)"
                " ORDER BY id DESC LIMIT ?", (before, before, limit)).fetchall()
        return [dict(id=r[0], command=r[1], started=r[2], finished=r[3], result=r[4],
                     summary=json.loads(r[5]) if r[5] else None) for r in rows]


@contextmanager
def exclusive(state_dir: str | os.PathLike[str]) -> Iterator[None]:
    """Hold the state directory's lock: one applying controller per state directory.

    flock is released by the kernel when the holder dies, so a SIGKILLed apply never
    leaves a stale lock; the pid inside is only for the message."""
    directory = Path(state_dir)
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    path = directory / "lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                raise
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise LockHeld(f"another iaasctl holds {path} (pid {holder})") from exc
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def lock_holder(state_dir: str | os.PathLike[str]) -> int | None:
    """The pid of the process holding the state directory's lock, or None when free."""
    path = Path(state_dir) / "lock"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
            return int(text) if text.isdigit() else None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
