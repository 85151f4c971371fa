"""What a pass means for each resource, as Kubernetes-style conditions.

Pure: given what the pass planned, did and saw, returns the conditions of every
resource involved. The daemon writes the ones that changed. A condition that no
longer holds is set to False (with the reason it cleared), so its last
transition time says since when.

    Ready            converged: nothing to change, nothing failed
    Reconciling      a change is being applied (set while the pass executes)
    Stalled          cannot progress until the manifest changes (permanent error, refusal)
    Drifted          someone changed it behind the controller's back, and it is not healed yet
    RestartRequired  the definition changed; the running VM waits for a restart the manifest does not allow
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from controller.daemon.backoff import Retry
from controller.model import Kind, Ref
from controller.reconcile import ApplyResult


@dataclass(frozen=True)
class CondValue:
    """The value of one condition: whether it holds, a CamelCase reason and a message for people."""

    status: bool
    reason: str
    message: str


@dataclass(frozen=True)
class PassFacts:
    """What one daemon pass planned, did and saw: everything conditions() decides from."""

    result: ApplyResult
    suspended: frozenset[Ref]
    held_files: frozenset[Ref]          # from a broken manifest
    in_grace: frozenset[Ref]            # manifest gone, deletion waits for the grace period
    retries: Mapping[Ref, Retry]
    drifted: Mapping[Ref, str]          # ref -> what drifted (this pass)
    inflight: frozenset[Ref] = frozenset()   # a change still running in the background


def conditions(ref: Ref, facts: PassFacts) -> dict[str, CondValue]:
    r = facts.result
    failed = {o.change.ref: o for o in r.outcomes if not o.ok}
    refused = {x.ref: x.message for x in r.full.refusals}
    remaining = {c.ref for c in r.remaining.changes}
    restart = {n.ref: n.message for n in r.full.notes if n.reason == "RestartRequired"}
    retry = facts.retries.get(ref)

    ready = CondValue(True, "Converged", "the host matches the manifest")
    applying = ref in facts.inflight
    if ref in facts.suspended:
        ready = CondValue(False, "Suspended", "reconciliation is suspended for this object")
    elif applying:
        ready = CondValue(False, "Applying", "a change is still being applied")
    elif ref in facts.held_files:
        ready = CondValue(False, "ManifestInvalid", "its manifest is invalid; the object is left as it is")
    elif ref in facts.in_grace:
        ready = CondValue(False, "ManifestMissing", "gone from the manifests; deleted after the grace period")
    elif retry is not None:
        when = "not retried until the manifest changes" if retry.next_at is None else "retrying with backoff"
        ready = CondValue(False, "Failed", f"{retry.error} ({when}; {retry.failures} failures)")
    elif ref in failed:
        ready = CondValue(False, "Failed", failed[ref].error or "failed")
    elif ref in refused:
        ready = CondValue(False, "Refused", refused[ref])
    elif ref in r.waiting:
        ready = CondValue(False, "Waiting", "waits for an object that is held or failing")
    elif ref in remaining:
        ready = CondValue(False, "Pending", "changes remain after the pass")

    permanent = retry is not None and retry.next_at is None
    stalled = (CondValue(True, "PermanentError", retry.error) if permanent and retry is not None
               else CondValue(True, "Refused", refused[ref]) if ref in refused
               else CondValue(False, "Progressing", "nothing blocks it"))
    healed = ref not in remaining and ref not in failed and not applying
    drifted = (CondValue(True, "Drifted", facts.drifted[ref]) if ref in facts.drifted and not healed
               else CondValue(False, "Healed" if ref in facts.drifted else "InSync",
                              "put back as the manifest says" if ref in facts.drifted else "no drift seen"))
    restarting = (CondValue(True, "RestartRequired", restart[ref]) if ref in restart
                  else CondValue(False, "UpToDate", "the running VM uses its definition"))
    found = {
        "Ready": ready,
        "Reconciling": (CondValue(True, "Applying", "a change is still being applied") if applying
                        else CondValue(False, "Idle", "no change in progress")),
        "Stalled": stalled,
        "Drifted": drifted,
    }
    if ref.kind is Kind.VM:
        found["RestartRequired"] = restarting
    return found
