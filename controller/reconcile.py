"""Reconcile: observe -> plan -> execute -> observe again, once.

`apply` never executes a plan built from an old snapshot: it observes, plans and
executes in one go, then observes again to report what did not converge. The
daemon (a later layer) calls the same function on each trigger.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from controller.adapter import Connecting, Libvirt
from controller.config import Config, kvm_works, resolve_domain_type
from controller.errors import IaasError, ManifestInvalid, PlanChanged, Problem
from controller.model import Desired, Kind, PoolSpec, Ref, Spec, VMSpec, VolumeSpec, ref_of
from controller.observe import Observed, ParseMemo, observe
from controller.plan import Action, Plan, Policy, plan
from controller.state import StateStore

if TYPE_CHECKING:   # execute is imported when there is something to execute: `plan` never needs it
    from controller.execute import Background, Outcome, Progress


@dataclass
class Session:
    """An open connection, the state store and the choices made for this host."""

    config: Config
    client: Libvirt
    store: StateStore
    # parsed definitions kept between observations: the daemon's passes over an
    # unchanged host parse nothing again
    memo: ParseMemo = field(default_factory=ParseMemo)

    @classmethod
    def open(cls, config: Config, connecting: Connecting | None = None, *,
             keepalive: tuple[int, int] | None = None) -> Session:
        """`connecting`: the connection to config.connect, begun earlier (see
        Connecting); `keepalive`: see Libvirt."""
        try:
            store = StateStore(config.state_dir)
        except BaseException:
            if connecting is not None:
                connecting.abandon()
            raise
        try:
            client = Libvirt(config.connect, connect_timeout=config.connect_timeout, connecting=connecting,
                             keepalive=keepalive)
        except BaseException:
            store.close()
            raise
        return cls(config, client, store)

    def close(self) -> None:
        self.client.close()
        self.store.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def domain_type(self) -> str:
        # A remote host cannot be probed from here: there, auto trusts what it offers.
        local = self.client.uri.startswith(("qemu:///", "qemu+unix:///"))
        return resolve_domain_type(
            self.config.domain_type, self.client.domain_types(), kvm_works=kvm_works() if local else True
        )

    def recover(self) -> list[str]:
        """Finish what a crashed run left half done, from the journal: an object it
        created but had not yet recorded is recorded as ours (never created twice, never
        left an orphan); anything else (a replace cut short after its delete, an entry of
        an older version) is finished by the next plan. Deletes are not journaled: their
        record remains until the object is gone. Returns one line per entry, for the log."""
        entries = self.store.journal()
        if not entries:
            return []
        observed = observe(self.client, memo=self.memo)
        owned = self.store.owned()
        lines = []
        for entry in entries:
            live = observed.objects.get(entry.ref)
            if entry.action in ("create", "replace") and live is not None and entry.ref not in owned:
                self.store.record_owned(entry.ref, source=entry.source, protect=entry.protect, uuid=live.uuid)
                lines.append(f"recovered {entry.ref}: created by an interrupted run, recorded as ours")
            else:
                lines.append(f"recovered {entry.ref}: interrupted {entry.action} is finished by this run")
            self.store.journal_end(entry.id)
        return lines

    def sync_records(self, desired: Desired, observed: Observed, *, unsettled: frozenset[Ref] = frozenset()
                     ) -> None:
        """Bring the store's records of owned objects up to date with their manifests
        where libvirt has nothing to change: a `protect: true` or a label added to an
        unchanged object must count at once, and an object known only by its owner
        marker (a lost state file) is recorded again. `unsettled` objects (held, failed,
        still differing) keep their record: it says what was last really applied."""
        from controller.execute.steps import record_spec, source_path

        owned = self.store.owned()
        wanted = desired.by_ref()
        for ref in owned:
            if ref not in wanted and ref not in observed.objects:
                self.store.forget(ref)   # gone from manifests and host (a delete cut short by a crash)
        hashes = desired.hashes
        sources: dict[str, str] = {}       # manifest file -> real path, resolved once per file
        for spec in desired.specs:
            ref = ref_of(spec)
            if ref in unsettled:
                continue
            live = observed.get(ref, pool=spec.pool if isinstance(spec, VolumeSpec) else None)
            record = owned.get(ref)
            marked = live is not None and live.owner is not None
            file = spec.meta.source.file
            source = sources.get(file) or sources.setdefault(file, source_path(spec))
            stale = record is None or record.spec_hash != hashes[ref] or record.source != source
            if (record is not None or marked) and stale:   # new values, or moved to another file
                record_spec(self.store, spec, live.uuid if live else None, generation=hashes[ref])

    def plan(self, desired: Desired, *, policy: Policy) -> tuple[Plan, Observed]:
        problems = paths_outside(desired, self.config.state_dir)
        if problems:
            raise ManifestInvalid(problems)
        observed = observe(self.client, memo=self.memo)
        return plan(desired, observed, self.store.owned(), policy=policy), observed


def paths_outside(desired: Desired, state_dir: str) -> list[Problem]:
    """Host paths must not lie in the state directory: it is 0700, so QEMU (which runs
    as its own user) could not read a disk or kernel there, and pruning a pool there
    would sit next to the controller's database."""
    root = os.path.realpath(state_dir)
    problems = []
    for spec in desired.specs:
        for path, value in _host_paths(spec):
            real = os.path.realpath(value)
            if real == root or real.startswith(root + os.sep):
                file, line = spec.meta.source.file, spec.meta.field_lines.get(path, spec.meta.source.line)
                problems.append(Problem(file, line, path, f"{value} is inside the state directory {state_dir}, "
                                                          "which only root may read; QEMU could not use it"))
    return problems


def _host_paths(spec: Spec) -> list[tuple[str, str]]:
    if isinstance(spec, PoolSpec):
        return [("spec.path", spec.path)]
    if isinstance(spec, VolumeSpec) and spec.source_path:
        return [("spec.source.path", spec.source_path)]
    if isinstance(spec, VMSpec) and spec.boot:
        return [("spec.boot.kernel", spec.boot.kernel)] + (
            [("spec.boot.initrd", spec.boot.initrd)] if spec.boot.initrd else [])
    return []


@dataclass(frozen=True)
class ApplyResult:
    """What one apply did, and what a plan made right after it still shows (`remaining`)."""

    plan: Plan                 # what was executed
    outcomes: list[Outcome]
    remaining: Plan            # what a plan right after the apply still shows (held objects left out)
    full: Plan                 # the plan before held objects were taken out
    waiting: frozenset[Ref] = frozenset()   # not attempted: they wait for a held object
    observed: Observed | None = None        # the host after the apply
    run_id: int | None = None               # the run in the state store, for results that come later

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]

    @property
    def pending(self) -> list[Outcome]:
        """Changes still finishing in the background (see execute.Background)."""
        return [o for o in self.outcomes if o.pending is not None]

    @property
    def converged(self) -> bool:
        return not self.failed and not self.pending and self.remaining.empty and not self.remaining.refusals


_RENDERED = (Action.CREATE, Action.REPLACE, Action.UPDATE, Action.RESTART)   # a VM's XML is written


class _Once:
    """`compute`'s result, from the first call that succeeds; a caller arriving while it
    is computed waits for it instead of computing it again."""

    def __init__(self, compute: Callable[[], str]) -> None:
        self._compute = compute
        self._lock = threading.Lock()
        self._value: str | None = None

    def __call__(self) -> str:
        with self._lock:
            if self._value is None:
                self._value = self._compute()
            return self._value


def _quietly(call: Callable[[], object]) -> None:
    """Ahead of need: a failure is the error of the step that needs the result, which
    calls again."""
    with contextlib.suppress(IaasError):
        call()


def apply(session: Session, desired: Desired, *, policy: Policy, progress: Progress | None = None,
          command: str = "apply", shown: Plan | None = None, held: frozenset[Ref] = frozenset(),
          planned: tuple[Plan, Observed] | None = None, background: Background | None = None) -> ApplyResult:
    """Observe, plan, execute, observe again.

    `shown` is a plan the user saw (and maybe confirmed): if the fresh plan differs,
    nothing is executed. `planned` is a plan and observation this session has just
    made, with nobody asked anything since: it is executed without observing again.
    `held` objects (suspended, backing off, from a broken or vanished manifest) are
    neither changed nor deleted, nor is what waits for them. Changes let go to the
    `background` are in the result as pending; their results are the caller's to record."""
    full, observed = planned or session.plan(desired, policy=policy)
    the_plan, waiting = full.without(held)
    if shown is not None and the_plan.summary() != shown.summary():
        raise PlanChanged("the host changed since the plan was shown; nothing was changed, run the command again")
    if the_plan.empty:
        session.sync_records(desired, observed, unsettled=_unsettled(full, held | waiting))
        return ApplyResult(the_plan, [], the_plan, full, waiting, observed)
    from controller.execute import execute
    from controller.execute.steps import StepContext

    run = session.store.begin_run(command)
    domain_type = _Once(session.domain_type)
    if any(c.ref.kind is Kind.VM and c.action in _RENDERED for c in the_plan.changes):
        # libvirt's capabilities (2-5 ms, and as long to parse) are read while the
        # pools, volumes and networks a new VM waits for are made, not after them
        threading.Thread(target=_quietly, args=(domain_type,), name="iaasctl-capabilities", daemon=True).start()
    ctx = StepContext(
        client=session.client, store=session.store, desired=desired,
        domain_type=domain_type,
        console_log_dir=session.config.console_log_dir,
        shutdown_timeout=session.config.shutdown_timeout,
    )
    outcomes = execute(the_plan, ctx, parallelism=session.config.parallelism, progress=progress,
                       background=background)
    results = [(o.change.ref, o.change.action.value, o.ok, o.error) for o in outcomes if o.pending is None]
    run_id = run.id     # written by now with the changes' records, or here if they wrote none
    try:
        after_full, after = session.plan(desired, policy=policy)
    except BaseException:
        session.store.record_results(run_id, results)   # what was done stays in the history
        raise
    remaining, _ = after_full.without(held | waiting)
    not_done = frozenset(o.change.ref for o in outcomes if not o.ok or o.pending is not None)
    session.sync_records(desired, after, unsettled=_unsettled(after_full, held | waiting | not_done))
    result = ApplyResult(the_plan, outcomes, remaining, full, waiting, after, run_id)
    summary = {"changes": len(the_plan.changes), "failed": len(result.failed),
               "refused": len(the_plan.refusals), "remaining": len(remaining.changes)}
    if result.pending:
        summary["pending"] = len(result.pending)    # their results are added to the run as they come
    # The results go in with the run's end: one commit (an fsync) less per apply.
    session.store.finish_run(run_id, result="converged" if result.converged else "not-converged", summary=summary,
                             results=results)
    return result


def _unsettled(plan: Plan, held: frozenset[Ref]) -> frozenset[Ref]:
    """Objects whose record must not move to the manifest's spec: held, failed, refused
    or still with changes to make."""
    return held | {c.ref for c in plan.changes} | {r.ref for r in plan.refusals}
