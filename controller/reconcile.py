"""Reconcile: observe -> plan -> execute -> observe again, once.

`apply` never executes a plan built from an old snapshot: it observes, plans and
executes in one go, then observes again to report what did not converge. The
daemon (a later layer) calls the same function on each trigger.
"""

from __future__ import annotations

from dataclasses import dataclass

from controller.adapter import Libvirt
from controller.config import Config, kvm_works, resolve_domain_type
from controller.execute import Outcome, Progress, execute
from controller.execute.steps import StepContext
from controller.model import Desired
from controller.observe import Observed, observe
from controller.plan import Plan, Policy, plan
from controller.state import StateStore


@dataclass
class Session:
    """An open connection, the state store and the choices made for this host."""

    config: Config
    client: Libvirt
    store: StateStore

    @classmethod
    def open(cls, config: Config) -> Session:
        store = StateStore(config.state_dir)
        try:
            client = Libvirt(config.connect)
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

    def domain_type(self, observed: Observed) -> str:
        local = self.client.uri.startswith(("qemu:///", "qemu+unix:///"))
        return resolve_domain_type(
            self.config.domain_type, observed.host.domain_types, kvm_works=local and kvm_works()
        )

    def plan(self, desired: Desired, *, policy: Policy) -> tuple[Plan, Observed]:
        observed = observe(self.client)
        return plan(desired, observed, self.store.owned(), policy=policy), observed


@dataclass(frozen=True)
class ApplyResult:
    plan: Plan
    outcomes: list[Outcome]
    remaining: Plan            # what a plan right after the apply still shows

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]

    @property
    def converged(self) -> bool:
        return not self.failed and self.remaining.empty and not self.remaining.refusals


def apply(session: Session, desired: Desired, *, policy: Policy, progress: Progress | None = None,
          command: str = "apply") -> ApplyResult:
    the_plan, observed = session.plan(desired, policy=policy)
    run_id = session.store.begin_run(command)
    ctx = StepContext(
        client=session.client, store=session.store, desired=desired,
        domain_type=session.domain_type(observed), console_log_dir=session.config.console_log_dir,
        shutdown_timeout=session.config.shutdown_timeout,
    )
    outcomes = execute(the_plan, ctx, parallelism=session.config.parallelism, progress=progress)
    for outcome in outcomes:
        session.store.record_result(run_id, outcome.change.ref, action=outcome.change.action.value,
                                    ok=outcome.ok, error=outcome.error)
    remaining, _ = session.plan(desired, policy=policy)
    result = ApplyResult(the_plan, outcomes, remaining)
    session.store.finish_run(run_id, result="converged" if result.converged else "not-converged", summary={
        "changes": len(the_plan.changes), "failed": len(result.failed),
        "refused": len(the_plan.refusals), "remaining": len(remaining.changes),
    })
    return result
