"""The state store: permissions whatever the umask, ownership records, runs, the lock."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from controller.errors import LockHeld
from controller.model import Kind, OwnedRecord, Ref
from controller.state import StateStore, exclusive
from controller.state.core import owned_row
from controller.state.status import ResourceStatus
from tests.conftest import transactions


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_files_are_private_even_under_umask_000(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        store = StateStore(tmp_path / "state")
        store.record_owned(Ref(Kind.VM, "web"), source="/srv/web.yaml", protect=False)
    finally:
        os.umask(old)
    try:
        assert mode(tmp_path / "state") == 0o700
        for name in ("state.db", "state.db-wal", "state.db-shm"):
            if (tmp_path / "state" / name).exists():
                assert mode(tmp_path / "state" / name) == 0o600, name
    finally:
        store.close()


def test_ownership_records_survive_reopening(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.record_owned(Ref(Kind.VOLUME, "data"), source="/srv/v.yaml", protect=True, spec_hash="abc",
                       spec={"name": "data"})
    store.close()
    again = StateStore(tmp_path)
    assert again.owned() == {Ref(Kind.VOLUME, "data"): OwnedRecord("/srv/v.yaml", True, "abc")}
    again.forget(Ref(Kind.VOLUME, "data"))
    assert again.owned() == {}
    again.close()


def test_results_and_history(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    ref, other = Ref(Kind.VM, "web"), Ref(Kind.NETWORK, "lan")
    store.record_owned(ref, source="/s.yaml", protect=False)
    store.record_owned(other, source="/s.yaml", protect=False)
    run = store.begin_run("apply").id
    store.record_results(run, [(ref, "create", False, "cannot start"), (other, "update", True, None)])
    store.finish_run(run, result="not-converged", summary={"failed": 1})
    status = store.status(ref)
    assert status is not None and (status.last_action, status.last_result, status.last_error) == (
        "create", "failed", "cannot start")
    assert [(h.action, h.result) for h in store.history(ref)] == [("create", "failed")]
    assert [(h.action, h.result, h.error) for h in store.history(other)] == [("update", "ok", None)]
    assert store.runs()[0]["result"] == "not-converged"
    store.close()


def commits(store: StateStore) -> list[str]:
    """Every COMMIT the store's connection runs from now on (each one an fsync)."""
    seen: list[str] = []
    store._db.set_trace_callback(lambda sql: seen.append(sql) if sql.strip().upper() == "COMMIT" else None)
    return seen


def test_a_run_is_written_with_its_first_journal_entry_in_one_commit(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    seen = commits(store)
    run = store.begin_run("delete")
    assert seen == [] and store.runs() == []          # no commit of its own before the first change
    entry = store.journal_begin(Ref(Kind.VM, "web"), "delete", source="/s.yaml", protect=False)
    assert len(seen) == 1
    assert [(r["command"], r["finished"]) for r in store.runs()] == [("delete", None)]
    assert [e.id for e in store.journal()] == [entry]
    assert run.id == store.runs()[0]["id"] and len(seen) == 1
    store.close()
    again = StateStore(tmp_path)                      # durable: as any commit is
    assert [r["command"] for r in again.runs()] == ["delete"]
    again.close()


def test_a_run_that_writes_nothing_else_is_written_when_its_id_is_asked(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    earlier = store.begin_run("apply").id
    seen = commits(store)
    run = store.begin_run("apply")
    assert run.id == earlier + 1 and len(seen) == 1
    assert run.id == earlier + 1 and len(seen) == 1   # once
    store.finish_run(run.id, result="converged", summary={"changes": 0})
    assert [r["result"] for r in store.runs()][:1] == ["converged"]
    store.close()


def test_what_a_change_leaves_is_synced_by_the_next_entry_or_the_runs_end(tmp_path: Path) -> None:
    """The journal entry before a change is synced before the change; the record it
    leaves after is not, and becomes durable with the next synced commit (the next
    entry, the run's end). Anything else the store writes is synced at once."""
    store = StateStore(tmp_path)
    seen = transactions(store)

    def synced() -> list[bool]:
        return [full for full, _ in seen]

    vm, net = Ref(Kind.VM, "web"), Ref(Kind.NETWORK, "lan")
    run = store.begin_run("apply")
    entry = store.journal_begin(net, "create", source="/s.yaml", protect=False)
    assert synced() == [True]                          # with the run's row, before the network is made
    row = owned_row(net, source="/s.yaml", protect=False, uuid="u-1")
    store.journal_end(entry, record=row, synced=False)
    store.record(owned_row(vm, source="/s.yaml", protect=False), synced=False)
    store.forget(vm, synced=False)
    assert synced() == [True, False, False, False]
    assert store.owned() == {net: OwnedRecord("/s.yaml", False, None)} and store.journal() == []
    store.finish_run(run.id, result="converged", summary={"changes": 1})
    store.record_owned(vm, source="/s.yaml", protect=True)
    assert synced() == [True, False, False, False, True, True]
    store.close()
    again = StateStore(tmp_path)
    assert set(again.owned()) == {net, vm} and again.journal() == []
    assert [r["result"] for r in again.runs()] == ["converged"]
    again.close()


def test_a_batch_with_one_write_that_must_be_synced_is_synced(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    seen = transactions(store)
    done: list[object] = []
    with store._lock:    # a commit under way: both queue for the next one
        threads = [
            threading.Thread(target=lambda: done.append(store.forget(Ref(Kind.VM, "old"), synced=False))),
            threading.Thread(target=lambda: done.append(store.journal_begin(
                Ref(Kind.VM, "new"), "create", source="/s.yaml", protect=False))),
        ]
        for thread in threads:
            thread.start()
        while len(store._queued) < 2:
            threading.Event().wait(0.001)
    for thread in threads:
        thread.join(timeout=10)
    assert len(done) == 2 and [full for full, _ in seen] == [True]
    store.close()


def test_a_second_holder_of_the_lock_is_refused_with_the_pid(tmp_path: Path) -> None:
    with exclusive(tmp_path):
        with pytest.raises(LockHeld, match=rf"another iaasctl holds {tmp_path}/lock \(pid {os.getpid()}\)"):
            with exclusive(tmp_path):
                pass
    with exclusive(tmp_path):  # released: taken again at once
        pass


def test_the_lock_is_free_as_soon_as_its_holder_is_killed(tmp_path: Path) -> None:
    code = f"from controller.state import exclusive\nwith exclusive({str(tmp_path)!r}):\n    print('held', flush=True)\n    import time; time.sleep(60)\n"
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "held"
        with pytest.raises(LockHeld, match=f"pid {child.pid}"):
            with exclusive(tmp_path):
                pass
    finally:
        child.kill()
        child.wait()
    with exclusive(tmp_path):
        pass


def test_events_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("controller.state.status.EVENTS_KEPT", 5)
    store = StateStore(tmp_path)
    ref = Ref(Kind.VM, "web")
    for i in range(12):
        store.add_event(ref, "Normal", "Started", f"number {i}")
    assert [e.message for e in store.events(ref)] == [f"number {i}" for i in range(7, 12)]
    store.close()


def test_conditions_keep_their_transition_time_until_they_flip(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    ref = Ref(Kind.VM, "web")
    assert store.set_conditions(ref, {"Ready": (True, "Converged", "ok")}) == {"Ready"}
    (first,) = store.conditions(ref)
    assert store.set_conditions(ref, {"Ready": (True, "Converged", "still ok")}) == set()
    (same,) = store.conditions(ref)
    assert same.since == first.since and same.message == "still ok"
    assert store.set_conditions(ref, {"Ready": (False, "Failed", "boom")}) == {"Ready"}
    (flipped,) = store.conditions(ref)
    assert flipped.since >= first.since and (flipped.status, flipped.reason) == (False, "Failed")
    store.close()


def test_an_objects_conditions_change_together(tmp_path: Path) -> None:
    """A reader on another connection (the API's) sees all of an object's conditions
    from before a write or all from after it, never Ready from one and Reconciling
    from the other."""
    store = StateStore(tmp_path)
    ref = Ref(Kind.VM, "web")
    store.set_conditions(ref, {"Ready": (False, "Applying", "."), "Reconciling": (True, "Applying", ".")})
    seen: set[tuple[tuple[str, bool], ...]] = set()
    stop = threading.Event()

    def read() -> None:
        reader = StateStore(tmp_path)
        while not stop.is_set():
            seen.add(tuple((c.type, c.status) for c in reader.conditions(ref)))
        reader.close()

    thread = threading.Thread(target=read)
    thread.start()
    for i in range(200):
        done = i % 2 == 0
        store.set_conditions(ref, {"Ready": (done, "Converged" if done else "Applying", "."),
                                   "Reconciling": (not done, "Applying" if not done else "Idle", ".")})
    stop.set()
    thread.join()
    store.close()
    assert seen <= {(("Ready", True), ("Reconciling", False)), (("Ready", False), ("Reconciling", True))}, seen
    assert len(seen) == 2, "the reader saw only one side of the writes"


def test_a_pass_is_recorded_in_one_commit(tmp_path: Path) -> None:
    """The daemon records a pass's verdict on every object, and then its pass count, in
    one transaction: a reader's snapshot (one query) holds one pass's conditions for all
    objects, never some from the pass before."""
    import sqlite3

    store = StateStore(tmp_path)
    refs = [Ref(Kind.VM, f"vm{i}") for i in range(5)]

    def record(n: int) -> None:
        store.record_pass(forget=[], conditions={r: {"Ready": (n % 2 == 0, "Converged", str(n))} for r in refs},
                          statuses=[], daemon={"passes": n})

    record(0)
    seen: list[set[str]] = []
    stop = threading.Event()

    def read() -> None:
        db = sqlite3.connect(tmp_path / "state.db")
        while not stop.is_set():
            rows = db.execute("SELECT c.message, d.value FROM conditions c, daemon d WHERE d.key = 'passes'")
            seen.append({f"{message}={passes}" for message, passes in rows})
        db.close()

    thread = threading.Thread(target=read)
    thread.start()
    for n in range(1, 100):
        record(n)
    stop.set()
    thread.join()
    store.close()
    assert all(len(pass_) == 1 and len({*next(iter(pass_)).split("=")}) == 1 for pass_ in seen), seen
    assert len({next(iter(pass_)) for pass_ in seen}) > 1, "the reader saw no pass but one"


def test_a_snapshot_reads_the_store_as_of_one_moment(tmp_path: Path) -> None:
    """`describe` reads an object's conditions, status and events inside a snapshot: a
    daemon pass committed between two of its reads is not half seen."""
    daemon, reader = StateStore(tmp_path), StateStore(tmp_path)
    ref = Ref(Kind.VM, "web")

    def record(reason: str, retries: int) -> None:
        daemon.record_pass(forget=[], conditions={ref: {"Ready": (False, reason, ".")}},
                           statuses=[ResourceStatus(ref, "g", None, retries, None, False, reason)], daemon={})

    record("Failed", 1)
    with reader.snapshot():
        (before,) = reader.conditions(ref)
        record("Pending", 2)
        assert reader.resource_statuses()[ref].retries == 1, "the status of the pass after the one read"
    assert (before.reason, reader.resource_statuses()[ref].retries) == ("Failed", 2)
    assert [c.reason for c in reader.conditions(ref)] == ["Pending"]
    daemon.close()
    reader.close()


def test_a_database_from_an_older_version_gets_the_new_tables_and_keeps_its_rows(tmp_path: Path) -> None:
    """Tables are made only when the database's user_version is not this version's:
    one made before a table existed (here: with the core tables only) is brought up
    to date, its records kept."""
    import sqlite3

    from controller.state import core

    old = sqlite3.connect(tmp_path / "state.db")
    old.executescript(core.SCHEMA)
    old.execute("INSERT INTO objects (kind, name, source, owned_since, updated) VALUES ('VirtualMachine', 'web', "
                "'/srv/web.yaml', 1, 1)")
    old.commit()
    old.close()
    store = StateStore(tmp_path)
    try:
        assert Ref(Kind.VM, "web") in store.owned()
        store.suspend(Ref(Kind.VM, "web"))            # a table the old database did not have
        assert store.suspended()[1] == {Ref(Kind.VM, "web")}
    finally:
        store.close()
    again = StateStore(tmp_path)
    try:
        assert again.suspended()[1] == {Ref(Kind.VM, "web")}
    finally:
        again.close()


def test_journal_writes_queued_at_the_same_moment_share_one_commit(tmp_path: Path) -> None:
    """Group commit: workers that write while a commit is under way are committed
    together by the next one; each still gets its own entry, and returns only once it
    is committed."""
    import threading

    store = StateStore(tmp_path)
    commits: list[str] = []
    store._db.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)
    ids: dict[str, int] = {}
    names = [f"vm-{i}" for i in range(6)]

    def begin(name: str) -> None:
        ids[name] = store.journal_begin(Ref(Kind.VM, name), "delete", source="/srv/vm.yaml", protect=False)

    with store._lock:    # a commit under way: the workers queue behind it
        threads = [threading.Thread(target=begin, args=(name,)) for name in names]
        for thread in threads:
            thread.start()
        while len(store._queued) < len(names):
            threading.Event().wait(0.001)
        assert not ids, "nobody returns before its entry is committed"
    for thread in threads:
        thread.join(timeout=10)
    assert len(commits) == 1
    assert sorted(ids) == names and len(set(ids.values())) == len(names)
    assert {(e.id, e.ref.name) for e in store.journal()} == {(ids[n], n) for n in names}

    # In one batch, work that fails is undone alone and raises in its own caller.
    results: dict[str, object] = {}

    def run(name: str, work: Any) -> None:
        try:
            results[name] = store._write_together(work)
        except ZeroDivisionError as exc:
            results[name] = exc

    with store._lock:
        failing = threading.Thread(target=run, args=("failing", lambda db: (db.execute("DELETE FROM journal"), 1 / 0)))
        good = threading.Thread(target=run, args=("good", lambda db: db.execute(
            "DELETE FROM journal WHERE id = ?", (ids["vm-0"],)).rowcount))
        for thread in (failing, good):
            thread.start()
        while len(store._queued) < 2:
            threading.Event().wait(0.001)
    for thread in (failing, good):
        thread.join(timeout=10)
    assert isinstance(results["failing"], ZeroDivisionError) and results["good"] == 1
    assert len(commits) == 2
    assert {e.ref.name for e in store.journal()} == set(names) - {"vm-0"}
    store.close()


def test_records_made_and_dropped_by_workers_at_the_same_moment_share_one_commit(tmp_path: Path) -> None:
    """A worker's record of what it made or deleted (an update, a delete, a VM's record
    before its start) goes in the same group commit as the other workers' writes."""
    import threading
    import time

    store = StateStore(tmp_path)
    for i in range(3):
        store.record_owned(Ref(Kind.VM, f"old-{i}"), source="/srv/vm.yaml", protect=False)
    commits: list[str] = []
    store._db.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)
    work = [lambda i=i: store.forget(Ref(Kind.VM, f"old-{i}")) for i in range(3)]
    work += [lambda i=i: store.record_owned(Ref(Kind.VM, f"new-{i}"), source="/srv/vm.yaml", protect=False)
             for i in range(3)]
    with store._lock:    # a commit under way: the workers queue behind it
        threads = [threading.Thread(target=w) for w in work]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        while len(store._queued) < len(work) and time.monotonic() < deadline:
            threading.Event().wait(0.001)
        queued = len(store._queued)
    for thread in threads:
        thread.join(timeout=10)
    assert queued == len(work), "each write waits in the queue for the next commit"
    assert len(commits) == 1
    assert {ref.name for ref in store.owned()} == {"new-0", "new-1", "new-2"}
    store.close()
