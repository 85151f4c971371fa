"""Execute: carry out a Plan against libvirt, in dependency order, in parallel.

Deletes run first (dependants before what they depend on: VMs, then volumes and
networks, then pools), then everything else (with any delete that waits for a VM
to let go of a disk or network first) (pools, then volumes and networks,
then VMs). Within each phase a change starts as soon as the changes it depends
on have succeeded; independent changes run side by side (`parallelism` workers).
The first `FIRST_WIDTH` go at once; more only when none of those finishes within
`WIDEN_AFTER`, or at once when a change that waits for a guest is due: changes that
quick (a volume, a pool) are served as well by a few workers, and every extra worker
opens a connection, which cost libvirtd ~6 ms of CPU each, taken from a network's
start (30 opened at once made it 0.76 s, not 0.26 s). Changes that slow are waits (a
guest's start, stop, shutdown or destruction), and waits do not need a core each;
held back, they cost more than the wait: with 30 VMs to delete, 22 destroys started
50 ms late, and libvirtd (20 workers) then served their connections' opens behind
the 8 destroys under way, up to 0.4 s later (docs/performance.md, fourteenth round).
A failed change fails only its dependants: unrelated changes carry on.

A caller may let some changes finish in the `background` (the daemon does, for VM
changes: libvirt's start of a guest can return seconds after the guest runs, and a
pass that waited for it could not heal anything else meanwhile). Only a change
nothing else in the plan waits for is let go; its Outcome is `pending` until done.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from controller import errors
from controller.adapter import Libvirt
from controller.execute.steps import StepContext, run_change
from controller.model import Kind, Ref
from controller.plan import Action, Change, Disruption, Plan

if TYPE_CHECKING:
    from concurrent.futures import Executor, Future


@dataclass(frozen=True)
class Outcome:
    """How one change of the plan went; `transient` failures may succeed when retried."""

    change: Change
    ok: bool
    error: str | None = None
    transient: bool = False
    skipped: bool = False          # not attempted: a change it depends on failed
    seconds: float = 0.0
    # Let go to the background: still running; the future gives the real Outcome.
    pending: Future[Outcome] | None = field(default=None, compare=False, repr=False)


Progress = Callable[[Change, "Outcome | None"], None]  # called with None when a change starts


@dataclass(frozen=True)
class Background:
    """Where changes that nothing waits for may finish after `execute` returns, and the
    connection they use. It must not be the caller's: libvirt answers a read of a
    domain's live XML on the connection that is starting it only once the start is over."""

    pool: Executor
    client: Libvirt
    wanted: Callable[[Change], bool]
    # told of each change as it is let go, before `execute` returns: a caller that never
    # sees the result (an error after the execution) still knows what is out
    on_let_go: Callable[[Outcome], None] | None = None


FIRST_WIDTH = 8
WIDEN_AFTER = 0.05   # seconds


def execute(plan: Plan, ctx: StepContext, *, parallelism: int = 32, progress: Progress | None = None,
            background: Background | None = None) -> list[Outcome]:
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
    needed = {d for c in plan.changes for d in c.depends_on} if background else set()
    outcomes: list[Outcome] = []
    with _Workers(parallelism) as pool:
        done: dict[Ref, Outcome] = {}
        for phase in (deletes, others):
            outcomes += _run_phase(phase, ctx, pool, progress, done, background, needed)
    return outcomes


class _Workers:
    """Up to `size` threads that attempt changes, started as they are needed, and the
    queue of their outcomes in the order they finish. Not concurrent.futures: its import
    (with logging's, ~12 ms) would be a tenth of a one-VM command's own time."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.width = min(size, FIRST_WIDTH)   # changes let in flight now: grows to size, never shrinks
        self.threads: list[threading.Thread] = []
        self.idle = 0
        self.todo: queue.SimpleQueue[tuple[Change, StepContext] | None] = queue.SimpleQueue()
        self.finished: queue.SimpleQueue[tuple[Change, Outcome | BaseException]] = queue.SimpleQueue()

    def __enter__(self) -> _Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        for _ in self.threads:
            self.todo.put(None)
        for thread in self.threads:
            thread.join()

    def start(self, change: Change, ctx: StepContext) -> None:
        """Attempt the change on an idle thread, or a new one (the caller keeps at most
        `size` changes in flight, so there is always one or the other)."""
        if self.idle:
            self.idle -= 1
        else:
            thread = threading.Thread(target=self._work, name=f"iaasctl-exec_{len(self.threads)}", daemon=True)
            self.threads.append(thread)
            thread.start()
        self.todo.put((change, ctx))

    def next_finished(self, *, more_ready: bool) -> tuple[Change, Outcome] | None:
        """The next change to finish. While `more_ready` changes wait for the width:
        None if none finishes within WIDEN_AFTER, and the width is then the whole size."""
        widen = more_ready and self.width < self.size
        try:
            change, outcome = self.finished.get(timeout=WIDEN_AFTER if widen else None)
        except queue.Empty:
            self.width = self.size
            return None
        self.idle += 1
        if isinstance(outcome, BaseException):   # a bug, not a failed change: the caller's to see
            raise outcome
        return change, outcome

    def _work(self) -> None:
        while (item := self.todo.get()) is not None:
            change, ctx = item
            try:
                result: Outcome | BaseException = _attempt(change, ctx)
            except BaseException as exc:   # noqa: BLE001 - handed to the caller's thread, raised there
                result = exc
            self.finished.put((change, result))


def _run_phase(
    changes: list[Change], ctx: StepContext, pool: _Workers, progress: Progress | None,
    done: dict[Ref, Outcome],
    background: Background | None = None, needed: set[Ref] | frozenset[Ref] = frozenset(),
) -> list[Outcome]:
    """Run one phase; `done` holds the outcomes of earlier phases (a change of this phase
    may wait for one of those) and receives this phase's.

    Event-driven: each change counts the changes of this phase it still waits for, and
    a finished change releases (or, failing, skips) its dependants. At most
    `pool.size` changes are in flight, so each wait looks at a handful of futures:
    linear in changes and dependencies, not quadratic, for thousands of changes."""
    in_phase = {c.ref: c for c in changes}
    waiting: dict[Ref, set[Ref]] = {}
    dependants: dict[Ref, list[Ref]] = {}
    for change in changes:
        waiting[change.ref] = {d for d in change.depends_on if d in in_phase}
        for dep in waiting[change.ref]:
            dependants.setdefault(dep, []).append(change.ref)
    ready: deque[Change] = deque()

    def settle(change: Change, outcome: Outcome) -> None:
        done[change.ref] = outcome
        if progress and outcome.pending is None:
            progress(change, outcome)
        for ref in dependants.get(change.ref, ()):
            if ref in done:
                continue
            if not outcome.ok:
                settle(in_phase[ref], _skipped(in_phase[ref], [change.ref]))
                continue
            waiting[ref].discard(change.ref)
            if not waiting[ref]:
                ready.append(in_phase[ref])

    for change in changes:
        failed_before = [d for d in change.depends_on if d in done and not done[d].ok]
        if change.ref in done:
            continue
        if failed_before:
            settle(change, _skipped(change, failed_before))
        elif not waiting[change.ref]:
            ready.append(change)
    running = 0
    while ready or running:
        while ready and running < pool.width:
            change = ready.popleft()
            if change.ref in done:
                continue
            if _waits_for_guest(change):
                pool.width = pool.size
            if progress:
                progress(change, None)
            if background is not None and change.ref not in needed and background.wanted(change):
                own = replace(ctx, client=background.client)
                pending = _let_go(change, background.pool.submit(_attempt, change, own), progress)
                if background.on_let_go is not None:
                    background.on_let_go(pending)
                settle(change, pending)
                continue
            pool.start(change, ctx)
            running += 1
        if not running:
            continue
        finished = pool.next_finished(more_ready=bool(ready))
        if finished is not None:
            settle(*finished)
            running -= 1
    for change in changes:   # still waiting: only a dependency cycle leaves changes so
        if change.ref not in done:
            done[change.ref] = Outcome(change, ok=False, error="not attempted: circular dependency")
    return [done[c.ref] for c in changes]


def _waits_for_guest(change: Change) -> bool:
    """A VM change that waits for its guest to start, stop or die (a second or more
    under TCG), rather than for libvirtd's quick bookkeeping (a definition)."""
    if change.ref.kind is not Kind.VM:
        return False
    return change.action in _GUEST_ACTIONS or change.disruption is Disruption.RESTART


_GUEST_ACTIONS = frozenset({Action.CREATE, Action.REPLACE, Action.RESTART, Action.START, Action.STOP,
                            Action.DELETE})


def _let_go(change: Change, future: Future[Outcome], progress: Progress | None) -> Outcome:
    """The Outcome of a change left to finish in the background; `progress` hears of
    its end from the thread that ran it."""
    if progress is not None:
        future.add_done_callback(lambda f: progress(change, f.result()) if f.exception() is None else None)
    return Outcome(change, ok=True, pending=future)


def _skipped(change: Change, failed: list[Ref]) -> Outcome:
    return Outcome(change, ok=False, skipped=True, error=f"not attempted: {', '.join(map(str, failed))} failed")


def _attempt(change: Change, ctx: StepContext) -> Outcome:
    started = time.monotonic()
    try:
        with ctx.client.own_connection():   # not one shared with the other workers: see there
            run_change(change, ctx)
    except errors.IaasError as exc:
        return Outcome(change, ok=False, error=str(exc), transient=exc.transient,
                       seconds=time.monotonic() - started)
    return Outcome(change, ok=True, seconds=time.monotonic() - started)
