"""Execute: carry out a Plan against libvirt, in dependency order, in parallel.

Deletes run first (dependants before what they depend on: VMs, then volumes and
networks, then pools), then everything else (with any delete that waits for a VM
to let go of a disk or network first) (pools, then volumes and networks,
then VMs). Within each phase a change starts as soon as the changes it depends
on have succeeded; independent changes run side by side (`parallelism` workers).
A failed change fails only its dependants: unrelated changes carry on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from controller import errors
from controller.execute.steps import StepContext, run_change
from controller.model import Ref
from controller.plan import Action, Change, Plan


@dataclass(frozen=True)
class Outcome:
    change: Change
    ok: bool
    error: str | None = None
    transient: bool = False
    skipped: bool = False          # not attempted: a change it depends on failed
    seconds: float = 0.0


Progress = Callable[[Change, "Outcome | None"], None]  # called with None when a change starts


def execute(plan: Plan, ctx: StepContext, *, parallelism: int = 4, progress: Progress | None = None) -> list[Outcome]:
    # A delete that waits for another kind of change (a VM letting go of a disk) runs
    # with the second phase, after that change.
    later = {c.ref for c in plan.changes if c.action is not Action.DELETE}
    grew = True
    while grew:   # ...and so does every delete that waits for one of those, transitively
        grew = False
        for change in plan.changes:
            if change.ref not in later and any(d in later for d in change.depends_on):
                later.add(change.ref)
                grew = True
    deletes = [c for c in plan.changes if c.ref not in later]
    others = [c for c in plan.changes if c.ref in later]
    outcomes: list[Outcome] = []
    with ThreadPoolExecutor(max_workers=parallelism, thread_name_prefix="iaasctl-exec") as pool:
        done: dict[Ref, Outcome] = {}
        for phase in (deletes, others):
            outcomes += _run_phase(phase, ctx, pool, progress, done)
    return outcomes


def _run_phase(
    changes: list[Change], ctx: StepContext, pool: ThreadPoolExecutor, progress: Progress | None,
    done: dict[Ref, Outcome],
) -> list[Outcome]:
    """Run one phase; `done` holds the outcomes of earlier phases (a change of this phase
    may wait for one of those) and receives this phase's."""
    pending = {c.ref: c for c in changes}
    running: dict[Future[Outcome], Change] = {}
    while pending or running:
        for ref, change in list(pending.items()):
            deps = [d for d in change.depends_on if d in pending or d in done or _in_flight(d, running)]
            failed = [d for d in deps if d in done and not done[d].ok]
            if failed:
                del pending[ref]
                outcome = Outcome(change, ok=False, skipped=True,
                                  error=f"not attempted: {', '.join(map(str, failed))} failed")
                done[ref] = outcome
                if progress:
                    progress(change, outcome)
            elif all(d in done for d in deps):
                del pending[ref]
                if progress:
                    progress(change, None)
                running[pool.submit(_attempt, change, ctx)] = change
        if not running:
            # Nothing can start: only a dependency cycle leaves changes waiting on each other.
            for ref, change in pending.items():
                done[ref] = Outcome(change, ok=False, error="not attempted: circular dependency")
            pending.clear()
            continue
        finished, _ = wait(running, return_when=FIRST_COMPLETED)
        for future in finished:
            change = running.pop(future)
            outcome = future.result()
            done[change.ref] = outcome
            if progress:
                progress(change, outcome)
    return [done[c.ref] for c in changes]


def _in_flight(ref: Ref, running: dict[Future[Outcome], Change]) -> bool:
    return any(c.ref == ref for c in running.values())


def _attempt(change: Change, ctx: StepContext) -> Outcome:
    started = time.monotonic()
    try:
        run_change(change, ctx)
    except errors.IaasError as exc:
        return Outcome(change, ok=False, error=str(exc), transient=exc.transient,
                       seconds=time.monotonic() - started)
    return Outcome(change, ok=True, seconds=time.monotonic() - started)
