"""The daemon against libvirt's test driver, in process: triggers, debouncing, healing,
grace periods, backoff, conditions, suspension, stopping.

The daemon runs in a thread with its own connection; the test changes the host
through the `session` fixture's connection (another client, like virsh), which
also keeps the test driver's in-memory host alive. Waits poll with a timeout
and report what they last saw; nothing depends on a fixed sleep.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from controller import errors
from controller.adapter import Libvirt
from controller.daemon import Daemon
from controller.model import Kind, Ref
from controller.observe import observe
from controller.reconcile import Session
from tests.conftest import wait_for
from tests.testdriver.conftest import settle
from tests.testdriver import manifests as m

WEB = Ref(Kind.VM, "t-web")


def test_the_first_pass_converges_and_records_status(start_daemon) -> None:
    run = start_daemon(m.stack())
    # the VM's create may still be finishing in the background after the first pass
    wait_for("t-web converged", lambda: run.condition(WEB, "Ready") == (True, "Converged"))
    assert run.state() == "running"
    assert run.condition(WEB, "Stalled") == (False, "Progressing")
    assert "Created" in run.events(WEB)
    status = run.store().resource_statuses()[WEB]
    assert status.generation == status.observed_generation and status.retries == 0


def test_a_manifest_edit_is_applied(start_daemon) -> None:
    run = start_daemon(m.stack(restart="auto"))
    (run.specs / "web.yaml").write_text(m.vm(memory="512MiB", restart="auto"))
    wait_for("the new memory", lambda: observe(run.session.client).objects[WEB].spec.memory == 512 << 20)


def test_out_of_band_destroy_is_healed_and_recorded_as_drift(start_daemon) -> None:
    run = start_daemon(m.stack())
    run.session.client.destroy_domain("t-web")
    wait_for("t-web running again", lambda: run.state() == "running")
    wait_for("a Drifted event", lambda: "Drifted" in run.events(WEB))
    wait_for("Drifted cleared", lambda: (run.condition(WEB, "Drifted") or (True,))[0] is False)
    reasons = run.events(WEB)
    assert reasons.index("Drifted") < len(reasons) - 1 - reasons[::-1].index("Started")


def test_out_of_band_undefine_and_network_stop_are_healed(start_daemon) -> None:
    run = start_daemon(m.stack())
    run.session.client.destroy_domain("t-web")
    run.session.client.undefine_domain("t-web")
    wait_for("t-web defined and running again", lambda: run.state() == "running")
    run.session.client.destroy_network("t-lab")
    wait_for("t-lab active again",
             lambda: observe(run.session.client).objects[Ref(Kind.NETWORK, "t-lab")].state == "active")


def test_unmanaged_objects_are_never_touched(start_daemon) -> None:
    run = start_daemon(m.stack())
    run.session.client.destroy_domain("test")          # libvirt's own fixture domain: not ours
    passes = run.daemon.passes
    run.session.client.destroy_domain("t-web")          # ours: a pass follows
    wait_for("t-web healed", lambda: run.state() == "running" and run.daemon.passes > passes)
    assert run.state("test") == "shutoff"


def test_an_invalid_manifest_leaves_its_objects_alone(start_daemon) -> None:
    run = start_daemon(m.stack())
    (run.specs / "web.yaml").write_text(m.vm(memory="lots"))
    wait_for("Ready false: ManifestInvalid", lambda: run.condition(WEB, "Ready") == (False, "ManifestInvalid"))
    assert run.state() == "running", "the VM of a broken manifest is left exactly as it is"
    run.session.client.destroy_domain("t-web")          # not even healed: held means held
    time.sleep(0.3)
    assert run.state() == "shutoff"
    (run.specs / "web.yaml").write_text(m.vm(memory="256MiB"))
    wait_for("converged again", lambda: run.state() == "running")


def test_a_vanished_manifest_deletes_only_after_the_grace_period(start_daemon) -> None:
    run = start_daemon(m.stack(), delete_grace=1.5)
    (run.specs / "web.yaml").unlink()
    wait_for("Ready false: ManifestMissing", lambda: run.condition(WEB, "Ready") == (False, "ManifestMissing"))
    assert run.state() == "running"
    wait_for("t-web deleted after the grace period", lambda: run.state() is None)


@pytest.mark.parametrize("save", ["in_place", "atomic_rename", "vim_backup"])
def test_editor_save_patterns_never_delete_and_are_applied(start_daemon, save: str) -> None:
    run = start_daemon(m.stack(restart="auto"), delete_grace=5.0)
    path = run.specs / "web.yaml"
    new = m.vm(memory="384MiB", restart="auto")
    if save == "in_place":
        with open(path, "w") as handle:      # truncate, then write in two flushed halves
            handle.write(new[: len(new) // 2])
            handle.flush()
            time.sleep(0.02)
            handle.write(new[len(new) // 2:])
    elif save == "atomic_rename":
        tmp = run.specs / ".web.yaml.tmp"
        tmp.write_text(new)
        os.replace(tmp, path)
    else:                                    # vim: rename the file away, write a new one, drop the backup
        os.rename(path, run.specs / "web.yaml~")
        time.sleep(0.05)
        path.write_text(new)
        os.unlink(run.specs / "web.yaml~")
    wait_for("the new memory", lambda: observe(run.session.client).objects[WEB].spec.memory == 384 << 20)
    assert "Deleted" not in run.events(WEB)


class _FailingStart(Libvirt):
    """Our adapter with one fault: starting t-web fails (the test driver starts anything)."""

    transient = True
    attempts: list[float] = []

    def start_domain(self, name: str) -> None:
        if name == "t-web":
            type(self).attempts.append(time.monotonic())
            error = errors.TransientFailure if self.transient else errors.InvalidForHost
            raise error("cannot start: injected failure", code=9)
        super().start_domain(name)


def test_a_failing_resource_backs_off_without_blocking_the_others(start_daemon) -> None:
    _FailingStart.attempts = []
    run = start_daemon(m.stack(), connect=_FailingStart)
    wait_for("three attempts", lambda: len(_FailingStart.attempts) >= 3, timeout=20)
    # The schedule, read from the daemon rather than from timing (shared machines are
    # noisy): each failure doubles the delay, and no attempt comes before it is due.
    # (an attempt is counted as it starts; its failure is recorded a moment later)
    retry = wait_for("three recorded failures", lambda: (lambda r: r if r and r.failures >= 3 else None)(
        run.daemon.backoff.get(WEB)))
    assert retry.next_at is not None
    assert retry.next_at - _FailingStart.attempts[retry.failures - 1] >= 0.2 * 2 ** (retry.failures - 1) * 0.9
    gaps = [b - a for a, b in zip(_FailingStart.attempts, _FailingStart.attempts[1:], strict=False)]
    assert all(gap >= 0.2 * 2**i * 0.9 for i, gap in enumerate(gaps)), f"an attempt came early: gaps {gaps}"
    assert observe(run.session.client).objects[Ref(Kind.NETWORK, "t-lab")].state == "active"
    ready = run.condition(WEB, "Ready")
    assert ready is not None and ready[0] is False
    assert run.store().resource_statuses()[WEB].retries >= 2
    assert "Failed" in run.events(WEB)


class _SlowStart(Libvirt):
    """Our adapter with one fault: a start of t-web returns only when the test says so,
    long after the guest runs (libvirt on a busy host does, by seconds)."""

    release = threading.Event()
    starts: list[str] = []

    def start_domain(self, name: str) -> None:
        super().start_domain(name)
        type(self).starts.append(name)
        if name == "t-web":
            assert type(self).release.wait(30), "the test never released the start"


API = m.vm().replace("t-web", "t-api").replace("    - volume: t-api-root\n", "").replace("disks:\n", "disks: []\n")
API = API.replace("52:54:00:77:00:11", "52:54:00:77:00:12")


def test_a_slow_start_does_not_hold_up_healing_the_others(start_daemon) -> None:
    api = Ref(Kind.VM, "t-api")
    _SlowStart.release, _SlowStart.starts = threading.Event(), []
    _SlowStart.release.set()
    run = start_daemon({**m.stack(), "api.yaml": API}, connect=_SlowStart)
    wait_for("both VMs running", lambda: run.state() == run.state("t-api") == "running")
    settle(run)
    _SlowStart.release.clear()

    before = len(_SlowStart.starts)
    run.session.client.destroy_domain("t-web")
    wait_for("t-web started, its start call not returned", lambda: _SlowStart.starts[before:] == ["t-web"])
    wait_for("t-web shown as being applied", lambda: run.condition(WEB, "Reconciling") == (True, "Applying"))
    run.session.client.destroy_domain("t-api")
    wait_for("t-api running again while t-web's start is still out", lambda: run.state("t-api") == "running")
    assert not _SlowStart.release.is_set()
    assert run.condition(WEB, "Ready") == (False, "Applying")
    settle(run)
    assert _SlowStart.starts.count("t-web") == 2, "a VM whose change is still running is not started again"

    _SlowStart.release.set()
    wait_for("t-web converged", lambda: run.condition(WEB, "Ready") == (True, "Converged"))
    assert run.condition(WEB, "Reconciling") == (False, "Idle")
    reasons = run.events(WEB)
    assert reasons[-2:] == ["Drifted", "Started"], reasons
    assert run.condition(api, "Ready") == (True, "Converged")


def test_stop_waits_for_a_change_still_running_and_records_it(start_daemon) -> None:
    _SlowStart.release, _SlowStart.starts = threading.Event(), []
    _SlowStart.release.set()
    run = start_daemon(m.stack(), connect=_SlowStart)
    settle(run)
    _SlowStart.release.clear()
    before = len(_SlowStart.starts)
    run.session.client.destroy_domain("t-web")
    wait_for("t-web's start under way", lambda: _SlowStart.starts[before:] == ["t-web"])
    run.daemon.stop()
    run.thread.join(timeout=1)
    assert run.thread.is_alive(), "the daemon stopped before the start it began was over"
    _SlowStart.release.set()
    run.thread.join(timeout=10)
    assert not run.thread.is_alive() and run.result == [0]
    assert run.events(WEB)[-1] == "Started"


class _SlowStartBlindAfter(_SlowStart):
    """And once armed, the second observation fails: the one right after a pass has let
    t-web's start go, so the pass ends in an error without seeing its result."""

    armed = 0

    def domains(self):  # type: ignore[no-untyped-def]
        if type(self).armed:
            type(self).armed += 1
            if type(self).armed == 3:
                raise errors.TransientFailure("injected: the observation failed", code=1)
        return super().domains()


def test_a_change_let_go_is_held_even_when_its_pass_fails_after_it(start_daemon) -> None:
    _SlowStart.release, _SlowStart.starts = threading.Event(), []
    _SlowStart.release.set()
    _SlowStartBlindAfter.armed = 0
    run = start_daemon(m.stack(), connect=_SlowStartBlindAfter)
    _SlowStart.release.clear()
    before = len(_SlowStart.starts)
    _SlowStartBlindAfter.armed = 1
    run.session.client.destroy_domain("t-web")
    wait_for("the pass that let the start go failed", lambda: _SlowStartBlindAfter.armed >= 3)
    for _ in range(2):                                # later passes do not start it again
        settle(run)
    assert _SlowStart.starts[before:] == ["t-web"]
    assert run.condition(WEB, "Ready") == (False, "Applying")
    _SlowStart.release.set()
    wait_for("t-web converged", lambda: run.condition(WEB, "Ready") == (True, "Converged"))
    assert run.events(WEB)[-1] == "Started"


def test_a_permanent_error_is_not_retried_until_the_manifest_changes(start_daemon) -> None:
    class Permanent(_FailingStart):
        transient = False

    _FailingStart.attempts = []
    run = start_daemon(m.stack(), connect=Permanent)
    wait_for("Stalled", lambda: run.condition(WEB, "Stalled") == (True, "PermanentError"))
    attempts = len(_FailingStart.attempts)
    for _ in range(2):                                # passes (as from events or resyncs) do not retry it
        passes = run.daemon.passes
        run.daemon.triggers.poke("test: look again")
        wait_for("another pass", lambda seen=passes: run.daemon.passes > seen)
    assert len(_FailingStart.attempts) == attempts
    (run.specs / "web.yaml").write_text(m.vm(memory="320MiB"))
    wait_for("a new attempt after the manifest changed", lambda: len(_FailingStart.attempts) > attempts)


def test_suspend_and_resume(start_daemon) -> None:
    run = start_daemon(m.stack())
    run.store().suspend(WEB)
    settle(run)                 # a pass that began before the suspension must not race the destroy
    run.session.client.destroy_domain("t-web")
    passes = run.daemon.passes
    wait_for("a pass", lambda: run.daemon.passes > passes)
    assert run.state() == "shutoff"
    assert run.condition(WEB, "Ready") == (False, "Suspended")
    run.store().resume(WEB)
    run.daemon.triggers.poke("test: resumed")
    wait_for("t-web running again", lambda: run.state() == "running")


def test_stop_finishes_cleanly(start_daemon) -> None:
    run = start_daemon(m.stack())
    run.daemon.stop()
    run.thread.join(timeout=10)
    assert not run.thread.is_alive() and run.result == [0]


def test_a_second_daemon_on_the_same_state_dir_is_refused(session, write_manifests) -> None:
    specs = write_manifests(m.stack())
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    cmd = [sys.executable, "-m", "controller", "--connect", "test:///default", "--state-dir",
           session.config.state_dir, "run", "-f", str(specs)]
    first = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        assert first.stderr is not None
        wait_for("the first daemon's first pass", lambda: "create VirtualMachine/t-web" in first.stderr.readline())
        second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        assert second.returncode == 1
        assert f"another iaasctl holds {session.config.state_dir}/lock (pid {first.pid})" in second.stderr
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=15) == 0
    finally:
        if first.poll() is None:
            first.kill()


def test_suspend_resume_and_reconcile_reach_a_running_daemon(session, write_manifests) -> None:
    """The commands write to the state store and wake the daemon (SIGUSR1); what the
    daemon then records is visible in the same store."""
    specs = write_manifests(m.stack())
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    base = [sys.executable, "-m", "controller", "--connect", "test:///default", "--state-dir",
            session.config.state_dir]
    daemon = subprocess.Popen([*base, "run", "-f", str(specs)], env=env, stderr=subprocess.DEVNULL,
                              stdin=subprocess.DEVNULL)
    store = session.store

    def ready() -> tuple[bool, str] | None:
        found = {c.type: c for c in store.conditions(WEB)}
        return (found["Ready"].status, found["Ready"].reason) if "Ready" in found else None

    def cli(*args: str) -> str:
        done = subprocess.run([*base, *args], env=env, capture_output=True, text=True, timeout=30, check=True)
        return done.stdout

    try:
        wait_for("t-web ready under the daemon", lambda: ready() == (True, "Converged"))
        assert f"told the daemon (pid {daemon.pid})" in cli("suspend", "vm", "t-web")
        wait_for("Ready false: Suspended", lambda: ready() == (False, "Suspended"))
        cli("resume", "vm", "t-web")
        wait_for("Ready again", lambda: ready() == (True, "Converged"))
        assert f"reconcile requested for VirtualMachine/t-web; told the daemon (pid {daemon.pid})" in cli(
            "reconcile", "vm", "t-web")
        assert "Created" in cli("events", "vm", "t-web")
        status = cli("status")
        assert f"daemon pid {daemon.pid}, connected to test:///default" in status and "converged" in status
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=15) == 0


def test_the_controllers_own_changes_do_not_cause_a_storm(start_daemon) -> None:
    """Creating five objects makes libvirt send a burst of events back; they coalesce
    into at most one more (quiet) pass, besides the one that records the VM's create
    (finished in the background) and the fixture's own, and then the daemon sleeps."""
    run = start_daemon(m.stack())
    wait_for("the follow-up pass", lambda: run.daemon.passes >= 2)
    settled = run.daemon.passes
    time.sleep(1.0)
    assert run.daemon.passes == settled <= 4
    mutations_before = run.daemon._session.client.mutations if run.daemon._session else 0
    run.daemon.triggers.poke("test: look again")
    wait_for("one more pass", lambda: run.daemon.passes > settled)
    assert run.daemon._session is not None and run.daemon._session.client.mutations == mutations_before


def test_a_global_suspension_stops_every_pass(start_daemon) -> None:
    run = start_daemon(m.stack())
    run.store().suspend(None)
    settle(run)
    run.session.client.destroy_domain("t-web")
    time.sleep(0.5)
    assert run.state() == "shutoff"
    run.store().resume(None)
    run.daemon.triggers.poke("test: resumed")
    wait_for("t-web running again", lambda: run.state() == "running")


def test_held_or_failing_changes_are_not_mistaken_for_drift(start_daemon) -> None:
    """An edit made while the object is suspended is applied on resume as an ordinary
    change, not as drift; while held, nothing is reported again and again."""
    run = start_daemon(m.stack(restart="auto"))
    run.store().suspend(WEB)
    settle(run)
    (run.specs / "web.yaml").write_text(m.vm(memory="384MiB", restart="auto"))
    for _ in range(3):
        settle(run)
    assert observe(run.session.client).objects[WEB].spec.memory == 256 << 20
    assert "Drifted" not in run.events(WEB)
    run.store().resume(WEB)
    settle(run)
    # the change is on the host before its pass records the event: wait for both
    wait_for("the edit applied and recorded", lambda: observe(run.session.client).objects[WEB].spec.memory
             == 384 << 20 and "Updated" in run.events(WEB))
    assert "Drifted" not in run.events(WEB) and "Updated" in run.events(WEB)


def test_a_path_inside_the_state_dir_is_a_held_manifest_problem_not_a_crash(start_daemon, session) -> None:
    run = start_daemon(m.stack())
    (run.specs / "pool.yaml").write_text(m.POOL.replace("/t-images", f"{session.config.state_dir}/pool"))
    wait_for("the pool held as ManifestInvalid",
             lambda: run.condition(Ref(Kind.POOL, "t-images"), "Ready") == (False, "ManifestInvalid"))
    assert run.thread.is_alive() and run.result == []
    # what depends on the pool (its volumes, the VM on them) is held too; the rest goes on
    assert run.condition(Ref(Kind.NETWORK, "t-lab"), "Ready") == (True, "Converged")
    assert run.state() == "running"


def test_a_deleted_objects_status_is_gone(start_daemon) -> None:
    run = start_daemon(m.stack(), delete_grace=0.2)
    (run.specs / "web.yaml").unlink()
    wait_for("t-web deleted", lambda: run.state() is None)
    settle(run)
    assert WEB not in run.store().resource_statuses()
    assert run.store().conditions(WEB) == []


def test_a_shutdown_event_waits_for_the_stopped_that_follows_it(session: Session, tmp_path: Path) -> None:
    """A domain reporting "shutdown" still runs; the "stopped" that follows wakes the pass
    that puts it back, unheld by a pass for the first (bench: destroy -> running again)."""
    from controller.daemon import SHUTDOWN_QUIET

    now = [100.0]
    daemon = Daemon([str(tmp_path)], session.config, clock=lambda: now[0])
    daemon._libvirt_event("VirtualMachine/web", "shutdown")
    assert daemon.triggers.wait(0) == []                      # no pass for a domain that still runs
    daemon._libvirt_event("VirtualMachine/web", "stopped")
    assert daemon.triggers.wait(0) == ["libvirt: VirtualMachine/web stopped"]
    now[0] += SHUTDOWN_QUIET
    assert daemon.triggers.wait(0) == []                      # the "shutdown" was replaced, not added

    daemon._libvirt_event("VirtualMachine/db", "shutdown")       # on_poweroff preserve: no "stopped" follows
    daemon._libvirt_event("Network/net", "stopped")              # another object's event does not replace it
    assert daemon.triggers.wait(0) == ["libvirt: Network/net stopped"]
    now[0] += SHUTDOWN_QUIET
    assert daemon.triggers.wait(0) == ["libvirt: VirtualMachine/db shutdown"]
