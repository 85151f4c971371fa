"""Plan: compare desired specs with an observed snapshot and list the changes.

`plan()` is purely computational: no I/O, no libvirt, no clock. Given the same
desired state, snapshot, ownership records and policy it returns the same Plan,
which is why `iaasctl plan` can show exactly what `apply` will do, and why the
planner is tested with plain data. Side effects happen in execute.py, once.

A plan holds three things:
- changes: what execute will do, each with its action, the fields that differ
  (old -> new), how disruptive it is and a human reason;
- refusals: what the safety rules forbid (not owned, protected, shrink, replace
  without opt-in, mass deletion); each names the manifest line when there is one;
- notes: facts that are not changes, such as a restart the manifest does not allow.
"""

from __future__ import annotations

import enum
import functools
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from controller.kinds import network as network_kind
from controller.kinds import pool as pool_kind
from controller.kinds import vm as vm_kind
from controller.kinds import volume as volume_kind
from controller.kinds.base import FieldDiff, UpdateMode
from controller.model import (
    Desired,
    Kind,
    NetworkSpec,
    OwnedRecord,
    PoolSpec,
    Ref,
    Spec,
    VMSpec,
    VolumeSpec,
    dependencies,
    ref_of,
)
from controller.observe import Live, Observed
from controller.units import format_size


class Action(enum.Enum):
    CREATE = "create"
    ADOPT = "adopt"
    UPDATE = "update"
    REPLACE = "replace"
    RESTART = "restart"
    START = "start"
    STOP = "stop"
    DELETE = "delete"

    @property
    def symbol(self) -> str:
        return {
            Action.CREATE: "+", Action.DELETE: "-", Action.REPLACE: "-/+", Action.ADOPT: "=",
        }.get(self, "~")


class Disruption(enum.Enum):
    NONE = "none"                          # applied live
    RESTART = "restart"                    # the object restarts to apply it
    RESTART_REQUIRED = "restart-required"  # in the definition; the manifest does not allow the restart
    DESTRUCTIVE = "destructive"            # data or identity is destroyed (delete, replace)


@dataclass(frozen=True)
class Change:
    """One thing execute will do to one object, with the fields that differ and a reason for people."""

    ref: Ref
    action: Action
    reason: str
    fields: tuple[FieldDiff, ...] = ()
    disruption: Disruption = Disruption.NONE
    spec: Spec | None = None               # desired; None for a delete
    live: Live | None = None               # observed; None for a create
    depends_on: tuple[Ref, ...] = ()       # changes that must succeed first
    restart: bool = False                  # VMs: restart as part of this change
    adopt: bool = False                    # record ownership of an existing object
    via: Ref | None = None                 # volumes: the running VM the change goes through


@dataclass(frozen=True)
class Refusal:
    """A change the safety rules forbid: reported, never carried out."""

    ref: Ref
    message: str                           # starts with file:line: path when a manifest line is known


@dataclass(frozen=True)
class Note:
    """A fact about an object that is not a change, such as a restart the manifest does not allow."""

    ref: Ref
    reason: str                            # a condition name, e.g. RestartRequired
    message: str


@dataclass(frozen=True)
class Plan:
    """What plan() found: the changes to make, the refusals and the notes."""

    changes: tuple[Change, ...] = ()
    refusals: tuple[Refusal, ...] = ()
    notes: tuple[Note, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.changes

    def without(self, held: frozenset[Ref]) -> tuple[Plan, frozenset[Ref]]:
        """This plan less the changes of `held` objects (suspended, backing off, from an
        invalid or vanished file), and less the changes that wait for those; the second
        value names the waiting ones."""
        removed = set(held)
        grew = True
        while grew:
            grew = False
            for change in self.changes:
                if change.ref not in removed and any(d in removed for d in change.depends_on):
                    removed.add(change.ref)
                    grew = True
        waiting = frozenset(removed - held)
        return Plan(
            changes=tuple(c for c in self.changes if c.ref not in removed),
            refusals=tuple(r for r in self.refusals if r.ref not in held),
            notes=self.notes,
        ), waiting

    def summary(self) -> tuple[tuple[str, str, tuple[tuple[str, str, str], ...]], ...]:
        """What the plan would do, without the snapshots it was computed from."""
        return tuple((str(c.ref), c.action.value, tuple((f.path, str(f.old), str(f.new)) for f in c.fields))
                     for c in self.changes)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for change in self.changes:
            out[change.action.value] = out.get(change.action.value, 0) + 1
        return out


@dataclass(frozen=True)
class Policy:
    """What a run may do beyond converging: the switches of the command line and, for
    `iaasctl delete`, the only objects it may delete."""

    adopt: bool = False                    # take over same-named objects the controller does not own
    allow_mass_delete: bool = False
    prune: bool = True                     # delete owned objects whose manifests are gone
    only: frozenset[Ref] | None = None     # consider only these objects for deletion (iaasctl delete)


@dataclass
class _Builder:
    """Collects the plan while the kind functions below walk the objects."""

    desired: Desired
    observed: Observed
    owned: Mapping[Ref, OwnedRecord]
    policy: Policy
    changes: list[Change] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)
    # What a new object takes over from an object this run prunes (a MAC, a subnet):
    # if that delete does not happen after all, neither may the takeover.
    borrowed: dict[Ref, dict[Ref, str]] = field(default_factory=dict)

    def is_owned(self, ref: Ref, live: Live) -> bool:
        return ref in self.owned or live.owner is not None

    # Facts about the whole host, computed once per plan: the checks that use them run
    # for every desired object, and must not make planning quadratic.

    @functools.cached_property
    def wanted(self) -> dict[Ref, Spec]:
        return self.desired.by_ref()

    @functools.cached_property
    def leaving(self) -> frozenset[Ref]:
        """Owned objects this run prunes (deletes run first): what they hold is free."""
        if not self.policy.prune:
            return frozenset()
        out = set()
        for ref, live in self.observed.objects.items():
            if ref in self.wanted or not self.is_owned(ref, live):
                continue
            record = self.owned.get(ref)
            source = record.source if record else (live.owner.source if live.owner else "")
            if _in_scope(source, self.desired.roots):
                out.add(ref)
        return frozenset(out)

    @functools.cached_property
    def host_macs(self) -> dict[str, list[Ref]]:
        macs: dict[str, list[Ref]] = {}
        for ref, live in self.observed.objects.items():
            if isinstance(live.spec, VMSpec):
                for nic in live.spec.nics:
                    if nic.mac:
                        macs.setdefault(nic.mac, []).append(ref)
        return macs

    @functools.cached_property
    def host_networks(self) -> list[tuple[Ref, NetworkSpec]]:
        found = [(ref, live.spec) for ref, live in self.observed.objects.items() if isinstance(live.spec, NetworkSpec)]
        return sorted(found, key=lambda item: item[0].sort_key)


def plan(desired: Desired, observed: Observed, owned: Mapping[Ref, OwnedRecord], *, policy: Policy) -> Plan:
    """The changes that make the host match `desired`. Pure: no side effects."""
    b = _Builder(desired, observed, owned, policy)
    for spec in sorted(desired.specs, key=lambda s: ref_of(s).sort_key):
        _plan_spec(b, spec)
    if policy.prune:
        _plan_deletes(b)
    _settle_borrowed(b)
    changes = _with_dependencies(b.changes, desired, observed, b.borrowed)
    return Plan(changes=tuple(changes), refusals=tuple(b.refusals), notes=tuple(b.notes))


# -- desired objects ------------------------------------------------------------------


def _plan_spec(b: _Builder, spec: Spec) -> None:
    ref = ref_of(spec)
    live = b.observed.get(ref, pool=spec.pool if isinstance(spec, VolumeSpec) else None)
    if isinstance(spec, VMSpec) and not ((_sized_as(live, spec) or _fits_host(b, spec)) and _macs_free(b, spec)):
        return
    if isinstance(spec, NetworkSpec) and not _address_space_free(b, spec):
        return
    if live is None:
        b.changes.append(Change(ref, Action.CREATE, _create_reason(spec), _create_fields(spec), spec=spec))
        return
    adopt = False
    if not b.is_owned(ref, live):
        if not b.policy.adopt:
            b.refusals.append(Refusal(ref, f"{spec.meta.source}: {ref} already exists and is not managed by "
                                           "iaasctl; rename it, remove it, or pass --adopt to take it over"))
            return
        adopt = True
    _HANDLERS[spec.kind](b, spec, live, adopt)
    if adopt and not any(c.ref == ref for c in b.changes):
        b.changes.append(Change(ref, Action.ADOPT, f"take over the existing {ref.kind.value}",
                                spec=spec, live=live, adopt=True))


def _plan_pool(b: _Builder, spec: Spec, live: Live, adopt: bool) -> None:
    assert isinstance(spec, PoolSpec) and isinstance(live.spec, PoolSpec)
    diffs = pool_kind.diff(spec, live.spec)
    if _refuse_replacement(b, spec, diffs, what="pool (its volumes stay on disk but the pool is redefined)"):
        return
    if any(d.mode is UpdateMode.REPLACE for d in diffs):
        b.changes.append(Change(ref_of(spec), Action.REPLACE, "the pool's path or type changed", tuple(diffs),
                                Disruption.DESTRUCTIVE, spec=spec, live=live, adopt=adopt))
    elif diffs or live.state != "active":
        fields = tuple(diffs) + ((FieldDiff("status", live.state, "active", UpdateMode.LIVE),)
                                 if live.state != "active" else ())
        action = Action.UPDATE if diffs else Action.START
        reason = _fields_reason(diffs) if diffs else "the pool is not active"
        b.changes.append(Change(ref_of(spec), action, reason, fields, spec=spec, live=live, adopt=adopt))


def _plan_volume(b: _Builder, spec: Spec, live: Live, adopt: bool) -> None:
    assert isinstance(spec, VolumeSpec) and isinstance(live.spec, VolumeSpec)
    diffs = volume_kind.diff(spec, live.spec, desired_backing=_desired_backing(b, spec))
    for d in diffs:
        if d.mode is UpdateMode.REFUSE:
            b.refusals.append(Refusal(ref_of(spec), f"{spec.meta.where(d.path)}: shrinking a volume from "
                                      f"{d.old} to {d.new} is refused: data beyond the new end would be lost"))
            return
    if _refuse_replacement(b, spec, diffs, what="volume, destroying its data"):
        return
    if any(d.mode is UpdateMode.REPLACE for d in diffs):
        b.changes.append(Change(ref_of(spec), Action.REPLACE, _fields_reason(diffs), tuple(diffs),
                                Disruption.DESTRUCTIVE, spec=spec, live=live, adopt=adopt))
    elif diffs:
        # A disk in use by a running VM is grown through that VM (QEMU holds the image's
        # write lock), which also tells the guest at once.
        via = _running_user(b.observed, spec)
        reason = f"grow the volume in place, live through {via}" if via else "grow the volume in place"
        b.changes.append(Change(ref_of(spec), Action.UPDATE, reason, tuple(diffs),
                                spec=spec, live=live, adopt=adopt, via=via))


def _running_user(observed: Observed, spec: VolumeSpec) -> Ref | None:
    for ref, live in sorted(observed.objects.items(), key=lambda item: item[0].sort_key):
        if isinstance(live.spec, VMSpec) and live.running and live.live is not None:
            if any(d.volume == spec.meta.name for d in live.live.disks):
                return ref
    return None


def _desired_backing(b: _Builder, spec: VolumeSpec) -> str | None:
    if spec.source_path:
        return os.path.normpath(spec.source_path)
    if spec.source_volume:
        source = b.wanted.get(Ref(Kind.VOLUME, spec.source_volume))
        pool = source.pool if isinstance(source, VolumeSpec) else spec.pool
        return b.observed.volume_path(pool, spec.source_volume) or f"<volume {spec.source_volume}, not yet created>"
    return None


def _plan_network(b: _Builder, spec: Spec, live: Live, adopt: bool) -> None:
    assert isinstance(spec, NetworkSpec) and isinstance(live.spec, NetworkSpec)
    diffs = network_kind.diff(spec, live.spec)
    inactive = live.state != "active"
    restart = any(d.mode is UpdateMode.RESTART for d in diffs)
    if not diffs and not inactive:
        return
    fields = tuple(diffs) + ((FieldDiff("status", live.state, "active", UpdateMode.LIVE),) if inactive else ())
    if diffs:
        disruption = Disruption.RESTART if restart and not inactive else Disruption.NONE
        reason = _fields_reason(diffs)
        if disruption is Disruption.RESTART:
            reason += "; the network restarts and connected VMs lose connectivity until they restart"
        b.changes.append(Change(ref_of(spec), Action.UPDATE, reason, fields, disruption,
                                spec=spec, live=live, restart=restart, adopt=adopt))
    else:
        b.changes.append(Change(ref_of(spec), Action.START, "the network is not active", fields,
                                spec=spec, live=live, adopt=adopt))


def _plan_vm(b: _Builder, spec: Spec, live: Live, adopt: bool) -> None:
    assert isinstance(spec, VMSpec) and isinstance(live.spec, VMSpec)
    ref = ref_of(spec)
    diffs = vm_kind.diff(spec, live.spec)
    if not live.persistent:
        # Undefined while running: it vanishes at its next stop. Defining it again is
        # not disruptive (the running VM goes on).
        diffs.append(FieldDiff("status", "transient", "defined", UpdateMode.LIVE))
    running = live.running
    pending = vm_kind.restart_pending(live.spec, live.live) if running and live.live else []
    needs_restart = running and spec.power == "running" and (
        any(d.mode is UpdateMode.RESTART for d in diffs) or bool(pending)
    )
    allowed = spec.restart_policy == "auto"
    power_diff = _power_diff(live, spec)
    fields = tuple(diffs) + ((power_diff,) if power_diff else ())
    if needs_restart and not allowed:
        waiting = [d.path for d in diffs if d.mode is UpdateMode.RESTART] + [d.path for d in pending]
        b.notes.append(Note(ref, "RestartRequired",
                            f"waiting for a restart: {', '.join(dict.fromkeys(waiting))} "
                            "(spec.restartPolicy is manual)"))
    if diffs:
        disruption = Disruption.NONE
        if needs_restart:
            disruption = Disruption.RESTART if allowed else Disruption.RESTART_REQUIRED
        b.changes.append(Change(ref, Action.UPDATE, _fields_reason(diffs), fields, disruption, spec=spec,
                                live=live, restart=needs_restart and allowed, adopt=adopt))
    elif power_diff:
        action = Action.START if spec.power == "running" else Action.STOP
        reason = f"the VM is {live.state} and spec.power is {spec.power}"
        b.changes.append(Change(ref, action, reason, fields, spec=spec, live=live, adopt=adopt))
    elif needs_restart and allowed:
        b.changes.append(Change(ref, Action.RESTART, "the running VM has not picked up its definition yet",
                                tuple(pending), Disruption.RESTART, spec=spec, live=live, restart=True,
                                adopt=adopt))


def _power_diff(live: Live, spec: VMSpec) -> FieldDiff | None:
    if (spec.power == "running") == live.running:
        return None
    return FieldDiff("spec.power", live.state, spec.power, UpdateMode.LIVE)


def _sized_as(live: Live | None, spec: VMSpec) -> bool:
    """The VM is defined with this memory and these vCPUs, and is running or is not
    to be started: the manifest asks the host for nothing it does not already give,
    and the host's size need not be read (see _fits_host). A VM to be started is
    checked as a new one is."""
    return live is not None and isinstance(live.spec, VMSpec) \
        and live.spec.memory == spec.memory and live.spec.vcpus == spec.vcpus \
        and (live.running or spec.power != "running")


def _fits_host(b: _Builder, spec: VMSpec) -> bool:
    """Admission against the host: a VM the host cannot hold is refused before anything
    is defined or changed (libvirt itself would define it, and some drivers start it)."""
    host = b.observed.host
    before = len(b.refusals)
    if host.memory and spec.memory > host.memory:
        b.refusals.append(Refusal(ref_of(spec), f"{spec.meta.where('spec.memory')}: {format_size(spec.memory)} "
                                  f"is more than the host's memory ({format_size(host.memory)})"))
    if host.cpus and spec.vcpus > host.cpus:
        b.refusals.append(Refusal(ref_of(spec), f"{spec.meta.where('spec.vcpus')}: {spec.vcpus} vCPUs is more "
                                  f"than the host's {host.cpus} CPUs"))
    return len(b.refusals) == before


def _macs_free(b: _Builder, spec: VMSpec) -> bool:
    """A MAC the manifest sets must not be on another domain of the host (libvirt
    accepts the duplicate; the network then breaks for both)."""
    clashes = []
    for index, nic in enumerate(spec.nics):
        for ref in b.host_macs.get(nic.mac or "", ()):
            if ref.name == spec.meta.name:
                continue
            if ref in b.leaving:
                b.borrowed.setdefault(ref_of(spec), {})[ref] = f"MAC {nic.mac}"
            else:
                clashes.append((index, nic.mac, ref))
    for index, mac, other in clashes:
        b.refusals.append(Refusal(ref_of(spec), f"{spec.meta.where(f'spec.networks[{index}].mac')}: {mac} is "
                                                f"already used by {other}"))
    return not clashes


def _address_space_free(b: _Builder, spec: NetworkSpec) -> bool:
    """A new subnet or bridge must not clash with another network of the host: libvirt
    defines such a network and fails only when it starts."""
    clashes = []
    for ref, other in b.host_networks:
        if ref.name == spec.meta.name:
            continue
        if ref in b.leaving:
            if spec.ipv4 and other.ipv4 and ipaddress.ip_network(spec.ipv4.cidr).overlaps(
                    ipaddress.ip_network(other.ipv4.cidr)):
                b.borrowed.setdefault(ref_of(spec), {})[ref] = f"subnet {other.ipv4.cidr}"
            continue
        if spec.ipv4 and other.ipv4 and ipaddress.ip_network(spec.ipv4.cidr).overlaps(
                ipaddress.ip_network(other.ipv4.cidr)):
            clashes.append(f"{spec.meta.where('spec.ipv4.cidr')}: {spec.ipv4.cidr} overlaps {ref} "
                           f"({other.ipv4.cidr})")
        if spec.bridge and spec.mode != "bridge" and other.bridge == spec.bridge:
            clashes.append(f"{spec.meta.where('spec.bridge')}: bridge {spec.bridge} is already used by {ref}")
    b.refusals.extend(Refusal(ref_of(spec), message) for message in clashes)
    return not clashes


_HANDLERS = {Kind.POOL: _plan_pool, Kind.VOLUME: _plan_volume, Kind.NETWORK: _plan_network, Kind.VM: _plan_vm}


def _refuse_replacement(b: _Builder, spec: Spec, diffs: list[FieldDiff], *, what: str) -> bool:
    replacing = [d for d in diffs if d.mode is UpdateMode.REPLACE]
    if not replacing:
        return False
    first = replacing[0]
    where = spec.meta.where(first.path)
    if spec.meta.protect:
        b.refusals.append(Refusal(ref_of(spec), f"{where}: changing {first.old} -> {first.new} would replace the "
                                  f"protected {what}; metadata.protect is true"))
        return True
    if not spec.meta.allow_replace:
        b.refusals.append(Refusal(ref_of(spec), f"{where}: changing {first.old} -> {first.new} would replace the "
                                  f"{what}; set metadata.allowReplace: true to allow it"))
        return True
    return False


# -- objects whose manifests are gone ----------------------------------------------------


def _plan_deletes(b: _Builder) -> None:
    wanted = set(b.wanted)
    candidates = []
    for ref, live in sorted(b.observed.objects.items(), key=lambda item: item[0].sort_key):
        if ref in wanted or not b.is_owned(ref, live):
            continue
        if b.policy.only is not None and ref not in b.policy.only:
            continue
        record = b.owned.get(ref)
        source = record.source if record else (live.owner.source if live.owner else "")
        if not _in_scope(source, b.desired.roots):
            continue
        if record and record.protect:
            b.refusals.append(Refusal(ref, f"{ref} is no longer in the manifests but is protected "
                                           "(metadata.protect was true); remove the protection first"))
            continue
        reason = ("named by iaasctl delete" if b.policy.only is not None
                  else f"its manifest ({source or 'unknown'}) no longer declares it")
        candidates.append(Change(ref, Action.DELETE, reason, disruption=Disruption.DESTRUCTIVE, live=live))
    candidates = _still_used(b, candidates)
    managed = sum(1 for ref, live in b.observed.objects.items() if b.is_owned(ref, live))
    if len(candidates) > 1 and len(candidates) * 2 > managed and not b.policy.allow_mass_delete:
        for change in candidates:
            b.refusals.append(Refusal(change.ref, f"refusing to delete {len(candidates)} of {managed} managed "
                                                  "objects in one run (an empty or wrong checkout?); "
                                                  "pass --allow-mass-delete if this is intended"))
        return
    b.changes.extend(candidates)


def _still_used(b: _Builder, candidates: list[Change]) -> list[Change]:
    """Refuse to delete what something that stays still uses: a running VM's disk, a
    network VMs are attached to, a pool holding volumes nobody deletes, the backing
    file of a clone. A VM whose new manifest drops the reference releases it (the
    delete then waits for that VM's update)."""
    # A VM lets go of a disk or NIC with its change only if it is not running after it,
    # or restarts into the new definition; a manual-restart update only rewrites the
    # definition, and the running VM keeps using the old devices.
    updating = {c.ref for c in b.changes
                if c.live is None or not c.live.running or c.restart
                or (isinstance(c.spec, VMSpec) and c.spec.power == "stopped")}
    desired = b.wanted
    kept = list(candidates)
    while True:
        deleting = {c.ref for c in kept}
        blocked = {}
        for change in kept:
            holders = [u for u in dict.fromkeys(b.observed.users_of(change.ref))
                       if u not in deleting and not _releases(desired.get(u), change.ref, u in updating)]
            if holders:
                blocked[change.ref] = holders
        if not blocked:
            return kept
        for ref, holders in blocked.items():
            b.refusals.append(Refusal(ref, f"{ref} is still used by {', '.join(map(str, holders))}, "
                                           "which stays; delete or change that first"))
        kept = [c for c in kept if c.ref not in blocked]


def _releases(spec: Spec | None, ref: Ref, changing: bool) -> bool:
    """Whether a user that stays will have let go of `ref` once its own change ran."""
    if spec is None or not changing or not isinstance(spec, VMSpec):
        return False
    if ref.kind is Kind.VOLUME:
        return all(d.volume != ref.name for d in spec.disks)
    if ref.kind is Kind.NETWORK:
        return all(n.network != ref.name for n in spec.nics)
    return False


def _settle_borrowed(b: _Builder) -> None:
    """A new object that takes a MAC or subnet from an object this run was to prune
    must not go ahead when that delete was refused (protected, still used, mass delete)."""
    deleted = {c.ref for c in b.changes if c.action is Action.DELETE}
    for ref, lenders in b.borrowed.items():
        kept = {lender: what for lender, what in lenders.items() if lender not in deleted}
        if not kept:
            continue
        b.changes = [c for c in b.changes if c.ref != ref]
        for lender, what in kept.items():
            b.refusals.append(Refusal(ref, f"{ref} would take over {what} from {lender}, which is not "
                                           "deleted in this run"))


def _in_scope(source: str, roots: tuple[str, ...]) -> bool:
    """Only objects applied from under the given paths are pruned: `apply -f web.yaml`
    never deletes what db.yaml declared."""
    if not source:
        return False
    return any(source == root or source.startswith(root.rstrip(os.sep) + os.sep) for root in roots)


# -- ordering ---------------------------------------------------------------------------


def _with_dependencies(changes: list[Change], desired: Desired, observed: Observed,
                       borrowed: Mapping[Ref, Mapping[Ref, str]]) -> list[Change]:
    """Attach to each change the changes it must wait for: a VM waits for its new volumes
    and networks, and for the delete of an object whose MAC or subnet it takes over; a
    deleted volume waits for the deletion of the VMs that use it."""
    planned = {c.ref for c in changes}
    deleted = {c.ref for c in changes if c.action is Action.DELETE}
    out = []
    for change in changes:
        if change.action is Action.DELETE:
            users = observed.users_of(change.ref)
            deps = tuple(r for r in dict.fromkeys(users) if r in planned)
        else:
            assert change.spec is not None
            deps = tuple(r for r in dependencies(change.spec) if r in planned and r not in deleted)
            deps += tuple(r for r in borrowed.get(change.ref, {}) if r in deleted)
        out.append(replace(change, depends_on=deps))
    return out


# -- reasons ----------------------------------------------------------------------------


def _create_reason(spec: Spec) -> str:
    return f"declared in {spec.meta.source} and absent from the host"


def _create_fields(spec: Spec) -> tuple[FieldDiff, ...]:
    """The essentials of a new object, shown under `+` in the plan."""
    live = UpdateMode.LIVE
    if isinstance(spec, PoolSpec):
        return (FieldDiff("spec.path", None, spec.path, live),)
    if isinstance(spec, VolumeSpec):
        fields = [FieldDiff("spec.size", None, format_size(spec.size), live),
                  FieldDiff("spec.format", None, spec.format, live)]
        if spec.source_volume or spec.source_path:
            fields.append(FieldDiff("spec.source", None, spec.source_volume or spec.source_path, live))
        return tuple(fields)
    if isinstance(spec, NetworkSpec):
        return (FieldDiff("spec.mode", None, spec.mode, live),
                *((FieldDiff("spec.ipv4.cidr", None, spec.ipv4.cidr, live),) if spec.ipv4 else ()))
    return (FieldDiff("spec.vcpus", None, spec.vcpus, live),
            FieldDiff("spec.memory", None, format_size(spec.memory), live),
            FieldDiff("spec.power", None, spec.power, live))


def _fields_reason(diffs: list[FieldDiff]) -> str:
    return "changed: " + ", ".join(d.path for d in diffs)
