"""The libvirt calls that carry out one Change, kind by kind.

Each function takes the change and a StepContext and either completes the change
or raises; a create that fails midway undoes what it did (terraform-provider-libvirt's
define -> start -> undefine-on-failure), so no defined-but-broken domain is left.
Ownership is recorded the moment an object exists, so that a crash right after
never leaves an object nobody owns.

What a change writes after its libvirt calls (the record it leaves, its journal
entry's end) is committed without an fsync of its own (`synced=False`, see
StoreCore._write_together): the next journal entry or the run's end syncs it. A
power loss before then takes nothing that cannot be derived again, since the entry
was synced before the change began. Those fsyncs stood between dependent changes
(a VM waits for its network's): 0.3-3 ms each, more under booting guests' writes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from controller import errors
from controller.adapter import Libvirt
from controller.kinds import network as network_kind
from controller.kinds import pool as pool_kind
from controller.kinds import vm as vm_kind
from controller.kinds import volume as volume_kind
from controller.kinds.base import OwnerMark
from controller.model import (
    Desired, Kind, NetworkSpec, PoolSpec, Ref, Spec, VMSpec, VolumeSpec, spec_document, spec_hash,
)
from controller.plan import Action, Change
from controller.state import StateStore
from controller.state.core import OwnedRow, owned_row


@dataclass(frozen=True)
class StepContext:
    """What the steps need besides the change: the connection, the state store, the run's
    manifests and the host settings. Made by reconcile.apply for one execution."""

    client: Libvirt
    store: StateStore
    desired: Desired
    domain_type: Callable[[], str]     # chosen when a VM is first rendered: other kinds never need it
    console_log_dir: str
    shutdown_timeout: float
    sleep: Callable[[float], None] = time.sleep


def source_path(spec: Spec) -> str:
    """The manifest file as recorded for ownership and prune scope: the real path, so
    that a checkout reached through a symlink is recognised as the same files."""
    return os.path.realpath(spec.meta.source.file)


def _record(ctx: StepContext, spec: Spec, uuid: str | None = None) -> None:
    record_spec(ctx.store, spec, uuid, generation=_generation(ctx, spec), synced=False)


def _generation(ctx: StepContext, spec: Spec) -> str | None:
    """The spec's hash as its load computed it (Desired.hashes), if it is the run's."""
    ref = Ref(spec.kind, spec.meta.name)
    return ctx.desired.hashes[ref] if ctx.desired.by_ref().get(ref) is spec else None


def record_spec(store: StateStore, spec: Spec, uuid: str | None = None, *, generation: str | None = None,
                synced: bool = True) -> None:
    store.record(spec_row(spec, uuid, generation=generation), synced=synced)


def spec_row(spec: Spec, uuid: str | None = None, *, generation: str | None = None) -> OwnedRow:
    """`generation`: the spec's spec_hash, when known already."""
    return owned_row(
        Ref(spec.kind, spec.meta.name), source=source_path(spec), protect=spec.meta.protect, uuid=uuid,
        spec_hash=generation or spec_hash(spec), spec=spec_document(spec),
    )


_JOURNALED = (Action.CREATE, Action.REPLACE)


def run_change(change: Change, ctx: StepContext) -> None:
    """Carry out one change; raises an IaasError when it cannot.

    Creates and replaces are multi-step: they are journaled first, so that a crash
    between two steps (a volume made but not yet recorded as ours) is finished on the
    next start (Session.recover) instead of leaving an orphan or a duplicate. A delete
    needs no entry: its record stays until the object is gone, so the next plan
    finishes a delete cut short, and the record goes in the commit after it."""
    if change.action not in _JOURNALED:
        row = _run(change, ctx)
        if row is None:
            ctx.store.forget(change.ref, synced=False)
        else:
            ctx.store.record(row, synced=False)
        return
    spec = change.spec
    entry = ctx.store.journal_begin(
        change.ref, change.action.value, source=source_path(spec) if spec else "",
        protect=spec.meta.protect if spec else False)
    try:
        row = _run(change, ctx)
    except errors.IaasError:
        ctx.store.journal_end(entry, synced=False)   # failed and rolled back: nothing is left half done
        raise
    # Anything else (a crash, an interrupt, a bug) leaves the entry for Session.recover.
    # The record of what was made goes in the entry's own end.
    ctx.store.journal_end(entry, record=row, synced=False)


def _run(change: Change, ctx: StepContext) -> OwnedRow | None:
    """Carry out a change; the record it leaves, to be written by the caller (None for
    a delete: the record goes)."""
    if change.action is Action.DELETE:
        _DELETE[change.ref.kind](ctx, change)
        return None
    spec = change.spec
    assert spec is not None
    if change.action is Action.CREATE:
        _CREATE[spec.kind](ctx, spec)
    elif change.action is Action.REPLACE:
        _DELETE[spec.kind](ctx, change)
        _CREATE[spec.kind](ctx, spec)
    elif change.action is Action.ADOPT:
        _mark_adopted(ctx, spec, change)
    else:
        _UPDATE[spec.kind](ctx, spec, change)
    return spec_row(spec, change.live.uuid if change.live else None, generation=_generation(ctx, spec))


def _mark_adopted(ctx: StepContext, spec: Spec, change: Change) -> None:
    """Write the owner marker into an adopted object that carries one, so that the
    adoption survives a lost state file like a creation does. Pools and volumes
    have no place for it: the state store is their only record."""
    if isinstance(spec, VMSpec):
        ctx.client.set_domain_owner(spec.meta.name, OwnerMark(source_path(spec)))
    elif isinstance(spec, NetworkSpec) and change.live is not None:
        assert isinstance(change.live.spec, NetworkSpec)
        ctx.client.define_network(network_kind.render(
            spec, owner=OwnerMark(source_path(spec)), uuid=change.live.uuid, bridge=change.live.spec.bridge))


def _undo(*calls: Callable[[], object]) -> None:
    """Best-effort rollback: every call is tried; what is already gone is fine."""
    for call in calls:
        try:
            call()
        except errors.IaasError:
            continue


# -- pools ---------------------------------------------------------------------------


def _create_pool(ctx: StepContext, spec: Spec) -> None:
    assert isinstance(spec, PoolSpec)
    name = spec.meta.name
    uuid = ctx.client.define_pool(pool_kind.render(spec))
    _record(ctx, spec, uuid)
    try:
        ctx.client.build_pool(name)
        ctx.client.start_pool(name)
        ctx.client.set_pool_autostart(name, spec.autostart)
    except errors.IaasError:
        _undo(lambda: ctx.client.destroy_pool(name), lambda: ctx.client.undefine_pool(name))
        ctx.store.forget(Ref(Kind.POOL, name), synced=False)
        raise


def _update_pool(ctx: StepContext, spec: Spec, change: Change) -> None:
    assert isinstance(spec, PoolSpec) and change.live is not None
    assert isinstance(change.live.spec, PoolSpec)
    if change.live.state != "active":
        ctx.client.start_pool(spec.meta.name)
    if change.live.spec.autostart != spec.autostart:
        ctx.client.set_pool_autostart(spec.meta.name, spec.autostart)


def _delete_pool(ctx: StepContext, change: Change) -> None:
    ref = change.ref
    _ignore_inactive(lambda: ctx.client.destroy_pool(ref.name))
    ctx.client.undefine_pool(ref.name)


# -- volumes --------------------------------------------------------------------------


def _create_volume(ctx: StepContext, spec: Spec) -> None:
    assert isinstance(spec, VolumeSpec)
    backing, backing_format = _backing(ctx, spec)
    xml = volume_kind.render(spec, backing_path=backing, backing_format=backing_format)
    ctx.client.create_volume(spec.pool, xml)   # one call: its record comes with the journal's end


def _backing(ctx: StepContext, spec: VolumeSpec) -> tuple[str | None, str | None]:
    if spec.source_volume:
        source = ctx.desired.by_ref().get(Ref(Kind.VOLUME, spec.source_volume))
        assert isinstance(source, VolumeSpec), "references are checked when manifests load"
        return ctx.client.volume_path(source.pool, source.meta.name), source.format
    if spec.source_path:
        try:
            return spec.source_path, volume_kind.image_format(spec.source_path)
        except OSError as exc:
            raise errors.InvalidForHost(
                f"{spec.meta.where('spec.source.path')}: cannot read the base image: {exc.strerror}"
            ) from exc
    return None, None


def _update_volume(ctx: StepContext, spec: Spec, change: Change) -> None:
    assert isinstance(spec, VolumeSpec) and change.live is not None
    if change.via is not None and change.live.path:
        ctx.client.block_resize(change.via.name, change.live.path, spec.size)
    else:
        ctx.client.resize_volume(spec.pool, spec.meta.name, spec.size)


def _delete_volume(ctx: StepContext, change: Change) -> None:
    assert change.live is not None and isinstance(change.live.spec, VolumeSpec)
    ctx.client.delete_volume(change.live.spec.pool, change.ref.name)


# -- networks -------------------------------------------------------------------------


def _create_network(ctx: StepContext, spec: Spec) -> None:
    assert isinstance(spec, NetworkSpec)
    name = spec.meta.name
    uuid = ctx.client.define_network(network_kind.render(spec, owner=OwnerMark(source_path(spec))))
    _record(ctx, spec, uuid)
    try:
        ctx.client.start_network(name)
        ctx.client.set_network_autostart(name, spec.autostart)
    except errors.IaasError:
        _undo(lambda: ctx.client.destroy_network(name), lambda: ctx.client.undefine_network(name))
        ctx.store.forget(Ref(Kind.NETWORK, name), synced=False)
        raise


def _update_network(ctx: StepContext, spec: Spec, change: Change) -> None:
    assert isinstance(spec, NetworkSpec) and change.live is not None
    live = change.live
    assert isinstance(live.spec, NetworkSpec)
    name, active = spec.meta.name, live.state == "active"
    if change.restart or change.adopt:
        xml = network_kind.render(spec, owner=OwnerMark(source_path(spec)), uuid=live.uuid, bridge=live.spec.bridge)
        ctx.client.define_network(xml)
        if active and change.restart:
            ctx.client.destroy_network(name)
            active = False
    else:
        _update_dhcp_hosts(ctx, spec, live.spec, active=active)
    if not active:
        ctx.client.start_network(name)
    if live.spec.autostart != spec.autostart:
        ctx.client.set_network_autostart(name, spec.autostart)


def _update_dhcp_hosts(ctx: StepContext, spec: NetworkSpec, live: NetworkSpec, *, active: bool) -> None:
    """Static DHCP hosts change live, without restarting the network."""
    want = set(spec.ipv4.hosts if spec.ipv4 else ())
    have = set(live.ipv4.hosts if live.ipv4 else ())
    for host in sorted(have - want, key=lambda h: h.mac):
        ctx.client.update_network_dhcp_host(spec.meta.name, network_kind.host_xml(host), add=False, live=active)
    for host in sorted(want - have, key=lambda h: h.mac):
        ctx.client.update_network_dhcp_host(spec.meta.name, network_kind.host_xml(host), add=True, live=active)


def _delete_network(ctx: StepContext, change: Change) -> None:
    ref = change.ref
    _ignore_inactive(lambda: ctx.client.destroy_network(ref.name))
    ctx.client.undefine_network(ref.name)


# -- virtual machines ---------------------------------------------------------------------


def _render_vm(ctx: StepContext, spec: VMSpec, *, uuid: str | None, macs: tuple[str | None, ...]) -> str:
    volumes = {}
    by_ref = ctx.desired.by_ref()
    for disk in spec.disks:
        vol = by_ref.get(Ref(Kind.VOLUME, disk.volume))
        assert isinstance(vol, VolumeSpec), "references are checked when manifests load"
        volumes[disk.volume] = vm_kind.VolumeRef(pool=vol.pool, format=vol.format)
    render_ctx = vm_kind.RenderContext(
        owner=OwnerMark(source_path(spec)), domain_type=ctx.domain_type(), console_log_dir=ctx.console_log_dir,
        volumes=volumes, uuid=uuid, macs=macs,
    )
    return vm_kind.render(spec, render_ctx)


def _create_vm(ctx: StepContext, spec: Spec) -> None:
    assert isinstance(spec, VMSpec)
    name = spec.meta.name
    uuid = ctx.client.define_domain(_render_vm(ctx, spec, uuid=None, macs=()))
    _record(ctx, spec, uuid)
    try:
        if spec.autostart:
            ctx.client.set_domain_autostart(name, True)
        if spec.power == "running":
            ctx.client.start_domain(name)
    except errors.IaasError:
        _undo(lambda: ctx.client.destroy_domain(name), lambda: ctx.client.undefine_domain(name))
        ctx.store.forget(Ref(Kind.VM, name), synced=False)
        raise


def _update_vm(ctx: StepContext, spec: Spec, change: Change) -> None:
    assert isinstance(spec, VMSpec) and change.live is not None
    live = change.live
    assert isinstance(live.spec, VMSpec)
    name = spec.meta.name
    if change.action is Action.UPDATE:
        macs = tuple(n.mac for n in live.spec.nics)
        ctx.client.define_domain(_render_vm(ctx, spec, uuid=live.uuid, macs=macs))
        if live.spec.autostart != spec.autostart:
            ctx.client.set_domain_autostart(name, spec.autostart)
    running = live.running
    if running and (change.restart or spec.power == "stopped"):
        stop_vm(ctx, name)
        running = False
    if not running and spec.power == "running":
        ctx.client.start_domain(name)


def stop_vm(ctx: StepContext, name: str) -> None:
    """Graceful shutdown (ACPI), forced off when it takes longer than the timeout."""
    _ignore_inactive(lambda: ctx.client.shutdown_domain(name))
    deadline = time.monotonic() + ctx.shutdown_timeout
    while time.monotonic() < deadline:
        if ctx.client.domain_state(name) == "shutoff":
            return
        ctx.sleep(0.25)
    _ignore_inactive(lambda: ctx.client.destroy_domain(name))


def _delete_vm(ctx: StepContext, change: Change) -> None:
    ref = change.ref
    _ignore_inactive(lambda: ctx.client.destroy_domain(ref.name))
    ctx.client.undefine_domain(ref.name)


def _ignore_inactive(call: Callable[[], object]) -> None:
    """Stopping what is already stopped is the wanted state, not an error (a race with
    someone else, or a guest that powered itself off)."""
    try:
        call()
    except errors.OperationInvalid:
        return


_CREATE: dict[Kind, Callable[[StepContext, Spec], None]] = {
    Kind.POOL: _create_pool, Kind.VOLUME: _create_volume, Kind.NETWORK: _create_network, Kind.VM: _create_vm,
}
_UPDATE: dict[Kind, Callable[[StepContext, Spec, Change], None]] = {
    Kind.POOL: _update_pool, Kind.VOLUME: _update_volume, Kind.NETWORK: _update_network, Kind.VM: _update_vm,
}
_DELETE: dict[Kind, Callable[[StepContext, Change], None]] = {
    Kind.POOL: _delete_pool, Kind.VOLUME: _delete_volume, Kind.NETWORK: _delete_network, Kind.VM: _delete_vm,
}
