"""Plan cases as data: given desired manifests and an observed host, expect these changes.

Each file in plans/ is one case (see plans/README.md for the format). One generic
runner builds the inputs, calls the pure `plan()`, and compares a compact text
rendering of the result, printing got/want on mismatch.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller import manifest
from controller.adapter import HostRecord
from controller.kinds.base import OwnerMark
from controller.model import Desired, Kind, OwnedRecord, Ref, Spec, VMSpec, VolumeSpec, ref_of
from controller.observe import Live, Observed
from controller.plan import Disruption, Plan, Policy, plan
from controller.units import parse_size

CASES = sorted((Path(__file__).parent / "plans").glob("*.yaml"))


def parse_ref(text: str) -> Ref:
    kind, name = text.split("/", 1)
    return Ref(Kind(kind), name)


def load_text(directory: Path, text: str) -> tuple[Spec, ...]:
    directory.mkdir(parents=True)
    if not text.strip():
        return ()
    (directory / "specs.yaml").write_text(text)
    return manifest.load([str(directory)]).specs


def volume_path(pool: str, name: str) -> str:
    return f"/pools/{pool}/{name}"


def observed_from(case: dict[str, Any], specs: tuple[Spec, ...], *, desired_file: str) -> Observed:
    facts = {parse_ref(k): v for k, v in (case.get("live") or {}).items()}
    host = case.get("host") or {}
    objects: dict[Ref, Live] = {}
    volumes: dict[tuple[str, str], Live] = {}
    for spec in specs:
        ref = ref_of(spec)
        fact = facts.get(ref, {})
        owner = OwnerMark(fact["marker"].replace("$DESIRED", desired_file)) if "marker" in fact else None
        if isinstance(spec, VolumeSpec):
            backing = volume_path(spec.pool, spec.source_volume) if spec.source_volume else spec.source_path
            spec = dataclasses.replace(spec, source_volume=None, source_path=backing)
            live = Live(ref, spec, "present", path=volume_path(spec.pool, spec.meta.name))
            volumes[(spec.pool, ref.name)] = live
        elif isinstance(spec, VMSpec):
            state = fact.get("state", "running" if spec.power == "running" else "shutoff")
            running = None
            if state == "running":
                overrides = {k: parse_size(v) if k == "memory" else v for k, v in (fact.get("running") or {}).items()}
                running = dataclasses.replace(spec, **overrides)
            live = Live(ref, spec, state, uuid="00000000-0000-0000-0000-000000000001", owner=owner, live=running,
                        persistent=fact.get("persistent", True))
        else:
            live = Live(ref, spec, fact.get("state", "active"), owner=owner)
        objects[ref] = live
    return Observed(
        read_host=lambda: HostRecord(cpus=host.get("cpus", 16), memory=parse_size(host.get("memory", "64GiB"))),
        objects=objects, volumes=volumes,
    )


def owned_from(case: dict[str, Any], observed: Observed, source: str) -> dict[Ref, OwnedRecord]:
    unowned = {parse_ref(r) for r in case.get("unowned") or []}
    protected = {parse_ref(r) for r in case.get("protected") or []}
    elsewhere = {parse_ref(r) for r in case.get("applied_elsewhere") or []}
    return {
        ref: OwnedRecord(source="/elsewhere/other.yaml" if ref in elsewhere else source, protect=ref in protected)
        for ref, live in observed.objects.items() if ref not in unowned and live.owner is None
    }


def policy_from(case: dict[str, Any]) -> Policy:
    """`only: [Kind/name, ...]` stands for `iaasctl delete` of those objects."""
    options = dict(case.get("policy") or {})
    if "only" in options:
        options["only"] = frozenset(parse_ref(r) for r in options["only"])
    return Policy(**options)


def render(result: Plan) -> dict[str, list[str]]:
    changes = []
    for c in result.changes:
        line = f"{c.action.value} {c.ref}"
        if c.disruption is not Disruption.NONE:
            line += f" [{c.disruption.value}]"
        if c.action.value != "create":
            line += "".join(f" | {f.path}: {_show(f.old)} -> {_show(f.new)}" for f in c.fields)
        if c.via:
            line += f" (via {c.via})"
        if c.depends_on:
            line += " (after " + ", ".join(map(str, c.depends_on)) + ")"
        changes.append(line)
    return {
        "changes": changes,
        "refusals": [f"{r.ref}: {r.message}" for r in result.refusals],
        "notes": [f"{n.ref} {n.reason}" for n in result.notes],
    }


def _show(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)


@pytest.mark.parametrize("case_file", CASES, ids=[c.stem for c in CASES])
def test_plan_case(case_file: Path, tmp_path: Path) -> None:
    case = yaml.safe_load(case_file.read_text())
    desired_specs = load_text(tmp_path / "desired", case.get("desired") or "")
    desired = Desired(desired_specs, roots=(str(tmp_path / "desired"),))
    observed = observed_from(case, load_text(tmp_path / "observed", case.get("observed") or ""),
                             desired_file=str(tmp_path / "desired" / "specs.yaml"))
    owned = owned_from(case, observed, str(tmp_path / "desired" / "specs.yaml"))
    got = render(plan(desired, observed, owned, policy=policy_from(case)))
    want = case["expect"]
    for key in ("changes", "notes"):
        assert got[key] == want.get(key, []), f"{key}\n got: {got[key]}\nwant: {want.get(key, [])}"
    wanted_refusals = want.get("refusals", [])
    assert len(got["refusals"]) == len(wanted_refusals), f"refusals\n got: {got['refusals']}\nwant: {wanted_refusals}"
    for text, fragment in zip(got["refusals"], wanted_refusals, strict=True):
        assert fragment in text, f"refusal\n got: {text}\nwant fragment: {fragment}"


def test_plan_is_pure_and_repeatable(tmp_path: Path) -> None:
    """The same inputs give the same plan, and planning changes nothing it was given."""
    case = yaml.safe_load((Path(__file__).parent / "plans" / "vm-memory-manual-restart.yaml").read_text())
    desired_specs = load_text(tmp_path / "d", case["desired"])
    desired = Desired(desired_specs, roots=(str(tmp_path / "d"),))
    observed = observed_from(case, load_text(tmp_path / "o", case["observed"]), desired_file="")
    owned = owned_from(case, observed, str(tmp_path / "d" / "specs.yaml"))
    snapshot = (desired, dict(observed.objects), dict(owned))
    first = plan(desired, observed, owned, policy=Policy())
    assert plan(desired, observed, owned, policy=Policy()) == first
    assert (desired, dict(observed.objects), dict(owned)) == snapshot


USES = """\
apiVersion: iaas/v1
kind: StoragePool
metadata: {name: images}
spec: {path: /pools/images}
---
apiVersion: iaas/v1
kind: Volume
metadata: {name: base}
spec: {pool: images, size: 1GiB}
---
apiVersion: iaas/v1
kind: Volume
metadata: {name: web-root}
spec: {pool: images, size: 2GiB, source: {volume: base}}
---
apiVersion: iaas/v1
kind: Volume
metadata: {name: db-root}
spec: {pool: images, size: 2GiB, source: {volume: base}}
---
apiVersion: iaas/v1
kind: Network
metadata: {name: lab}
spec: {mode: isolated}
---
apiVersion: iaas/v1
kind: VirtualMachine
metadata: {name: web}
spec: {vcpus: 1, memory: 1GiB, disks: [{volume: web-root}, {volume: base}], networks: [{network: lab}, {network: lab}]}
---
apiVersion: iaas/v1
kind: VirtualMachine
metadata: {name: db}
spec: {vcpus: 1, memory: 1GiB, disks: [{volume: db-root}]}
"""


def _scanned_users(ref: Ref, observed: Observed) -> list[Ref]:
    """What the planner asked before the index: a scan of the whole host per question."""
    users = []
    for other, live in observed.objects.items():
        for spec in (live.spec, live.live):
            if isinstance(spec, VMSpec) and (
                    (ref.kind is Kind.VOLUME and any(d.volume == ref.name for d in spec.disks))
                    or (ref.kind is Kind.NETWORK and any(n.network == ref.name for n in spec.nics))):
                users.append(other)
    target = observed.objects.get(ref)
    for (pool, name), live in observed.volumes.items():
        assert isinstance(live.spec, VolumeSpec)
        if (ref.kind is Kind.POOL and pool == ref.name) or (
                ref.kind is Kind.VOLUME and target is not None and target.path and live.spec.source_path == target.path):
            users.append(Ref(Kind.VOLUME, name))
    return users


def test_what_uses_each_object_is_what_a_scan_of_the_host_finds(tmp_path: Path) -> None:
    """`Observed.users_of` answers from one index of the host (a teardown asks it for
    every object it deletes); its answers are the scan's, in the same order: the
    definition's users and the running ones', the VMs before the clones."""
    specs = load_text(tmp_path / "observed", USES)
    observed = observed_from({}, specs, desired_file="x.yaml")
    db = observed.objects[Ref(Kind.VM, "db")]
    assert db.live is not None
    running = dataclasses.replace(db.live, disks=(dataclasses.replace(db.live.disks[0], volume="base"),))
    observed = dataclasses.replace(observed, objects={**observed.objects, db.ref: dataclasses.replace(db, live=running)})
    refs = [ref_of(s) for s in specs] + [Ref(Kind.NETWORK, "absent"), Ref(Kind.VOLUME, "absent")]
    answers = {ref: observed.users_of(ref) for ref in refs}
    assert answers == {ref: _scanned_users(ref, observed) for ref in refs}
    assert answers[Ref(Kind.VOLUME, "base")] == [Ref(Kind.VM, "web"), Ref(Kind.VM, "web"), Ref(Kind.VM, "db"),
                                                 Ref(Kind.VOLUME, "web-root"), Ref(Kind.VOLUME, "db-root")]
