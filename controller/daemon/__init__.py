"""The continuous reconcile daemon: `iaasctl run`.

One loop on the main thread waits for a trigger (a manifest edit, a libvirt
lifecycle event, a due retry, an explicit request, the periodic resync), then
runs one pass: the same observe -> plan -> execute -> observe as `apply`, with
held objects left out (suspended, backing off, from a broken manifest, or gone
from the manifests for less than the grace period), and records what the pass
means for each resource (conditions, retries, events).

A change to a VM that nothing else waits for is let go to the background once
started: libvirt's start of a guest can return seconds after the guest runs, and a
pass that waited for it could heal nothing else meanwhile. Such a VM is held by the
passes that follow until its change has finished; the pass after that records how it
went (events, retries) and looks at it again.

When libvirt goes away, the daemon says so, reconnects with backoff, subscribes
to events again and re-reads everything: missed events are not replayed, and
none are needed, as every pass looks at the whole host.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace

from controller import errors
from controller.adapter import Libvirt
from controller.adapter.events import Subscription, start_event_loop, subscribe
from controller.config import Config
from controller.daemon.backoff import Backoff
from controller.daemon.conditions import CondValue, PassFacts, conditions
from controller.daemon.desired import Grace, load_tolerant
from controller.daemon.triggers import FileWatch, Triggers
from controller.execute import Background, Outcome
from controller.model import Kind, Ref
from controller.plan import Action, Change, Policy
from controller.reconcile import ApplyResult, Session, apply
from controller.state import ResourceStatus, StateStore, exclusive

log = logging.getLogger("iaasctl")

_PAST = {"create": "Created", "adopt": "Adopted", "update": "Updated", "replace": "Replaced",
         "restart": "Restarted", "start": "Started", "stop": "Stopped", "delete": "Deleted"}
RECONNECT_MAX = 30.0
SHUTDOWN_QUIET = 2.0   # how long a domain's "shutdown" event waits for its "stopped" (see _libvirt_event)


class Daemon:
    def __init__(self, paths: Sequence[str], config: Config, *, policy: Policy | None = None,
                 connect: Callable[[str], Libvirt] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.paths = list(paths)
        self.config = config
        self.policy = policy or Policy()
        self._connect = connect or functools.partial(Libvirt, connect_timeout=config.connect_timeout)
        self._clock = clock
        self.triggers = Triggers(clock=clock)
        self.backoff = Backoff(base=config.backoff_base, cap=config.backoff_max)
        self.grace = Grace(config.delete_grace, clock)
        self._stopping = threading.Event()
        self._session: Session | None = None
        self._subscription: Subscription | None = None
        self._store: StateStore | None = None
        self._connected = False
        self._reconnect_delay = 1.0
        self._written: dict[tuple[Ref, str], CondValue] = {}   # what the store has, to write only changes
        self._status_written: dict[Ref, ResourceStatus] = {}
        self._logged_problems: tuple[str, ...] = ()
        # changes let go to the background, by object: (the pending outcome, its run)
        self._inflight: dict[Ref, tuple[Outcome, int | None]] = {}
        self._background: ThreadPoolExecutor | None = None
        self._background_client: Libvirt | None = None    # the connection of what runs there
        self.passes = 0                        # completed passes, for tests and the status line

    # -- lifecycle -----------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to finish the pass in progress and return (signal-handler safe)."""
        self._stopping.set()
        self.triggers.poke("stop")

    def run(self) -> int:
        with exclusive(self.config.state_dir):
            self._store = StateStore(self.config.state_dir)
            self._store.set_daemon_state(pid=os.getpid(), uri=self.config.connect, paths=self.paths,
                                         started=time.time(), connected=False, running=True)
            start_event_loop()
            watch = FileWatch(self.paths, self.triggers, debounce=self.config.debounce)
            watch.start()
            self._background = ThreadPoolExecutor(max_workers=self.config.parallelism,
                                                  thread_name_prefix="iaasctl-background")
            log.info("watching %s; libvirt %s; resync every %ss", ", ".join(self.paths), self.config.connect,
                     f"{self.config.resync_interval:g}")
            try:
                self._loop()
            finally:
                watch.stop()
                self._background.shutdown(wait=True)    # what was started is finished, and recorded
                self._collect(None)
                if self._background_client is not None:
                    self._background_client.close()
                if self._subscription is not None:
                    self._subscription.close()
                self._store.set_daemon_state(running=False, connected=False, stopped=time.time())
                self._store.close()
        log.info("stopped")
        return 0

    def _loop(self) -> None:
        reasons = ["start"]
        next_resync = self._clock() + self.config.resync_interval
        while not self._stopping.is_set():
            if not self._ensure_connected():
                self.triggers.wait(self._reconnect_delay)
                self._reconnect_delay = min(self._reconnect_delay * 2, RECONNECT_MAX)
                reasons = ["reconnect"]
                continue
            now = self._clock()
            if now >= next_resync:
                reasons.append("resync")
                next_resync = now + self.config.resync_interval
            if reasons:
                self._pass(reasons)
            # Sleep until a trigger, the resync, a retry or the end of a grace period.
            timers = [t for t in (self.backoff.next_due(), self.grace.next_due()) if t is not None]
            wake = min([next_resync, *timers])
            reasons = [r for r in self.triggers.wait(max(0.0, wake - self._clock())) if r != "stop"]
            if not reasons and timers and self._clock() >= min(timers):
                reasons = ["a retry or a grace period is due"]

    # -- the connection ---------------------------------------------------------------------

    def _libvirt_event(self, subject: str, event: str) -> None:
        """A libvirt lifecycle event ("VirtualMachine/web", "stopped") wakes a pass, but a
        domain shutting down still runs: a pass now would find nothing to do, and the
        "stopped" that follows a moment later (0.2 s after a `virsh destroy` here) would
        wait for it. So "shutdown" waits SHUTDOWN_QUIET for that "stopped", which takes
        its place; if none comes (on_poweroff preserve), it wakes a pass then."""
        shutting_down = f"libvirt: {subject} shutdown"
        if event == "shutdown":
            self.triggers.poke_after(shutting_down, SHUTDOWN_QUIET)
            return
        self.triggers.cancel(shutting_down)
        self.triggers.poke(f"libvirt: {subject} {event}")

    def _ensure_connected(self) -> bool:
        if self._connected:
            return True
        assert self._store is not None
        try:
            client = self._connect(self.config.connect)
            subscription = subscribe(client, on_event=self._libvirt_event, on_close=self._closed)
            try:
                background_client = self._connect(self.config.connect)
                background_client.keepalive = client.keepalive    # a hung libvirtd fails its calls too
            except errors.IaasError:
                subscription.close()
                raise
        except errors.IaasError as exc:
            log.warning("libvirt %s unreachable: %s; retrying in %.0fs", self.config.connect, exc,
                        self._reconnect_delay)
            return False
        if self._subscription is not None:
            self._subscription.close()
            log.info("reconnected to %s", self.config.connect)
            # Failures caused by the lost connection are not the resources' fault.
            for ref, retry in self.backoff.items():
                if retry.next_at is not None:
                    self.backoff.forget(ref)
        self._session = Session(self.config, client, self._store)
        if self._background_client is not None:
            self._background_client.close()
        self._background_client = background_client
        self._subscription = subscription
        self._connected = True
        self._store.set_daemon_state(connected=True, since=time.time())
        self._reconnect_delay = 1.0
        for line in self._session.recover():
            log.info("%s", line)
        return True

    def _closed(self, reason: str) -> None:
        """libvirt's close callback (event thread): note it and wake the loop."""
        if self._connected:
            log.warning("libvirt connection closed (%s): host disconnected", reason)
            if self._store is not None:
                self._store.set_daemon_state(connected=False, since=time.time(), reason=reason)
        self._connected = False
        self.triggers.poke("disconnected")

    # -- one pass ---------------------------------------------------------------------------

    def _pass(self, reasons: list[str]) -> None:
        assert self._session is not None and self._store is not None
        store = self._store
        for request in store.take_requests():
            if request is None:
                for ref, _ in self.backoff.items():
                    self.backoff.forget(ref)
            else:
                self.backoff.forget(request)
        everything, suspended = store.suspended()
        if everything:
            log.info("pass skipped: reconciliation is suspended (iaasctl resume)")
            self.passes += 1
            return
        owned = store.owned()
        loaded = load_tolerant(self.paths, owned, state_dir=self.config.state_dir)
        self._report_problems(loaded.problems)
        generations = loaded.desired.hashes
        self._collect(generations)
        inflight = frozenset(self._inflight)
        in_grace = self.grace.held(loaded.desired, owned)
        backing_off = self.backoff.held(self._clock(), generations)
        retried = {ref for ref, _ in self.backoff.items()} - backing_off   # due now: attempted this pass
        held = suspended | loaded.held | in_grace | backing_off | inflight
        log.debug("pass (%s)", "; ".join(dict.fromkeys(reasons)))
        try:
            assert self._background is not None and self._background_client is not None
            result = apply(self._session, loaded.desired, policy=self.policy, held=held,
                           progress=self._progress, command="run",
                           background=Background(self._background, self._background_client, _finishes_later,
                                                 on_let_go=self._went))
        except errors.Disconnected as exc:
            self._closed(str(exc))
            return
        except errors.IaasError as exc:
            log.warning("pass failed: %s", exc)
            return
        except Exception:   # a bug must not take the controller down: log it, the next trigger retries
            log.exception("pass failed unexpectedly")
            return
        drifted = self._drift(result, owned, generations)
        self._record([o for o in result.outcomes if o.pending is None], generations)
        for outcome in result.pending:   # their results go to this pass's run when they come
            self._inflight[outcome.change.ref] = (outcome, result.run_id)
        inflight = frozenset(self._inflight)
        failing = {o.change.ref for o in result.outcomes if not o.ok} | inflight
        for ref in retried - failing:       # due, and nothing failed: settled (or nothing to do any more)
            self.backoff.succeeded(ref)
        facts = PassFacts(result, suspended, loaded.held, in_grace, dict(self.backoff.items()), drifted, inflight)
        deleted = {o.change.ref for o in result.outcomes if o.change.action is Action.DELETE and o.ok}
        refs = (set(generations) | {c.ref for c in result.full.changes} | set(self.backoff_refs())
                | loaded.held | in_grace | inflight)
        refs -= deleted
        records = store.owned()
        conds = {ref: self._changed_conditions(ref, conditions(ref, facts)) for ref in refs}
        statuses = {}
        for ref in refs:
            observed = records[ref].spec_hash if ref in records else None
            status = self._resource_status(ref, generations.get(ref), observed)
            if self._status_written.get(ref) != _stable(status):
                statuses[ref] = status
        # One transaction: a reader sees the whole verdict of one pass or of the one before,
        # and the pass counts (last) only with everything it means recorded.
        state = {"last_pass": time.time(), "converged": result.converged, "passes": self.passes + 1}
        store.record_pass(forget=deleted, conditions={ref: _rows(c) for ref, c in conds.items() if c},
                          statuses=statuses.values(), daemon=state)
        self.passes += 1
        for ref in deleted:
            self._written = {k: v for k, v in self._written.items() if k[0] != ref}
            self._status_written.pop(ref, None)
        for ref, c in conds.items():
            self._written.update(((ref, t), v) for t, v in c.items())
        self._status_written.update((ref, _stable(s)) for ref, s in statuses.items())

    @property
    def inflight(self) -> frozenset[Ref]:
        """Objects whose change still runs in the background, or whose outcome is not recorded yet."""
        return frozenset(self._inflight)

    def backoff_refs(self) -> list[Ref]:
        return [ref for ref, _ in self.backoff.items()]

    def _progress(self, change: Change, outcome: Outcome | None) -> None:
        assert self._store is not None
        if outcome is None:
            self._write_conditions(change.ref, {"Reconciling": CondValue(True, "Applying", change.reason)})
            return
        if outcome.ok:
            log.info("%s %s: ok (%.1fs)", change.action.value, change.ref, outcome.seconds)
        else:
            log.warning("%s %s: %s", change.action.value, change.ref, outcome.error)

    def _drift(self, result: ApplyResult, owned: dict, generations: dict[Ref, str]) -> dict[Ref, str]:
        """Changes to owned objects whose manifests did not change since they were last
        applied: someone changed the host behind the controller's back."""
        drifted = {}
        outcomes = {o.change.ref: o for o in result.outcomes}
        for change in result.plan.changes:
            record = owned.get(change.ref)
            if change.action is Action.DELETE or record is None or record.spec_hash != generations.get(change.ref):
                continue
            what = (", ".join(f"{f.path}: {f.old} -> {f.new}" for f in change.fields)
                    if change.action is not Action.CREATE else "the object is gone")
            drifted[change.ref] = what
            outcome = outcomes.get(change.ref)
            fixed = ("not put back yet" if outcome is None or not outcome.ok
                     else "being put back" if outcome.pending is not None else "put back")
            assert self._store is not None
            self._store.add_event(change.ref, "Warning", "Drifted", f"changed outside iaasctl: {what} ({fixed})")
            log.warning("drift %s: %s (%s)", change.ref, what, fixed)
        return drifted

    def _went(self, outcome: Outcome) -> None:
        """A change let go to the background (the pass's thread, as it happens): its object
        is held from now on, even if the pass ends in an error before it sees the result."""
        assert outcome.pending is not None
        ref = outcome.change.ref
        self._inflight[ref] = (outcome, None)
        outcome.pending.add_done_callback(functools.partial(self._finished, ref))

    def _finished(self, ref: Ref, _future: Future[Outcome]) -> None:
        """A change let go to the background is done (its thread): a pass records it."""
        self.triggers.poke(f"finished: {ref}")

    def _collect(self, generations: dict[Ref, str] | None) -> None:
        """Record the changes that finished in the background since the last pass."""
        assert self._store is not None
        finished = []
        by_run: dict[int, list[tuple[Ref, str, bool, str | None]]] = {}
        for ref, (outcome, run_id) in list(self._inflight.items()):
            future = outcome.pending
            assert future is not None
            if not future.done():
                continue
            del self._inflight[ref]
            exc = future.exception()
            if exc is not None:   # a bug: recorded as a failure, retried like one
                log.error("%s %s failed unexpectedly", outcome.change.action.value, ref, exc_info=exc)
                final = Outcome(outcome.change, ok=False, error=f"unexpected error: {exc!r}", transient=True)
            else:
                final = future.result()
            if run_id is not None:
                by_run.setdefault(run_id, []).append((ref, final.change.action.value, final.ok, final.error))
            finished.append(final)
        for run_id, results in by_run.items():   # one commit per run, not per change
            self._store.record_results(run_id, results)
        self._record(finished, generations or {})

    def _record(self, outcomes: list[Outcome], generations: dict[Ref, str]) -> None:
        assert self._store is not None
        for outcome in outcomes:
            ref, action = outcome.change.ref, outcome.change.action.value
            if outcome.ok:
                self.backoff.succeeded(ref)
                self._store.add_event(ref, "Normal", _PAST[action], outcome.change.reason)
                continue
            if outcome.skipped:
                continue
            retry = self.backoff.failed(ref, transient=outcome.transient, error=outcome.error or "failed",
                                        generation=generations.get(ref), now=self._clock())
            when = (f"retry in {retry.next_at - self._clock():.0f}s" if retry.next_at is not None
                    else "not retried until its manifest changes")
            self._store.add_event(ref, "Warning", "Failed", f"{action}: {outcome.error} ({when})")

    def _changed_conditions(self, ref: Ref, values: dict[str, CondValue]) -> dict[str, CondValue]:
        """The conditions of `ref` that differ from what the store has."""
        return {t: v for t, v in values.items() if self._written.get((ref, t)) != v}

    def _write_conditions(self, ref: Ref, values: dict[str, CondValue]) -> None:
        assert self._store is not None
        changed = self._changed_conditions(ref, values)
        if changed:
            self._store.set_conditions(ref, _rows(changed))
            self._written.update(((ref, t), v) for t, v in changed.items())

    def _resource_status(self, ref: Ref, generation: str | None, observed: str | None) -> ResourceStatus:
        retry = self.backoff.get(ref)
        next_retry = None
        if retry is not None and retry.next_at is not None:
            next_retry = time.time() + (retry.next_at - self._clock())
        return ResourceStatus(ref, generation, observed, retry.failures if retry else 0, next_retry,
                              retry is not None and retry.next_at is None, retry.error if retry else None)

    def _report_problems(self, problems: tuple) -> None:
        lines = tuple(str(p) for p in problems)
        if lines != self._logged_problems:
            for line in lines:
                log.error("%s", line)
            if lines:
                noun = "problem" if len(lines) == 1 else "problems"
                log.error("%d manifest %s: the objects of those files are left as they are", len(lines), noun)
            self._logged_problems = lines


def _rows(values: dict[str, CondValue]) -> dict[str, tuple[bool, str, str]]:
    """Conditions as the store takes them: type -> (status, reason, message)."""
    return {t: (v.status, v.reason, v.message) for t, v in values.items()}


def _stable(status: ResourceStatus) -> ResourceStatus:
    """A status without its wall-clock retry time: what decides whether it needs writing again."""
    return replace(status, next_retry=None)


def _finishes_later(change: Change) -> bool:
    """What a pass need not wait for: changes to VMs (starts, restarts, redefinitions),
    not their deletion, which frees disks and networks for what comes after it."""
    return change.ref.kind is Kind.VM and change.action is not Action.DELETE
