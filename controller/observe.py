"""Observe: read the live host through the adapter, in batched list-all calls, and
parse every object into the same typed shape as the specs.

The result is an immutable snapshot. The planner compares it with the desired
state; nothing here decides anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from xml.etree import ElementTree as ET

from controller.adapter import HostRecord, Libvirt
from controller.kinds import network as network_kind
from controller.kinds import pool as pool_kind
from controller.kinds import vm as vm_kind
from controller.kinds import volume as volume_kind
from controller.kinds.base import OwnerMark, get_owner
from controller.model import Kind, NetworkSpec, PoolSpec, Ref, Spec, VMSpec, VolumeSpec

RUNNING_STATES = frozenset({"running", "paused", "shutting-down", "pmsuspended"})


@dataclass(frozen=True)
class Live:
    """One object as it is on the host."""

    ref: Ref
    spec: Spec                          # the persistent definition, in spec shape
    state: str                          # VMs: running/shutoff/...; networks, pools: active/inactive
    uuid: str | None = None
    owner: OwnerMark | None = None      # ownership marker found inside the object
    live: VMSpec | None = None          # VMs: the running definition
    path: str | None = None             # volumes: file path
    persistent: bool = True             # False: a running domain someone undefined (transient)

    @property
    def running(self) -> bool:
        return self.state in RUNNING_STATES or self.state == "active"


@dataclass(frozen=True)
class Observed:
    host: HostRecord
    objects: Mapping[Ref, Live] = field(default_factory=dict)
    # Volume names are unique per pool, not per host: every volume, by (pool, name).
    volumes: Mapping[tuple[str, str], Live] = field(default_factory=dict)

    def get(self, ref: Ref, *, pool: str | None = None) -> Live | None:
        """The live object for a reference; for volumes, the one in `pool` if there is one."""
        if ref.kind is Kind.VOLUME and pool is not None:
            found = self.volumes.get((pool, ref.name))
            if found is not None:
                return found
        return self.objects.get(ref)

    def volume_path(self, pool: str, name: str) -> str | None:
        found = self.volumes.get((pool, name))
        return found.path if found else None


def observe(client: Libvirt) -> Observed:
    objects: dict[Ref, Live] = {}
    volumes: dict[tuple[str, str], Live] = {}
    for pool in client.pools():
        pool_spec: PoolSpec = pool_kind.parse(pool.xml, autostart=pool.autostart)
        objects[Ref(Kind.POOL, pool.name)] = Live(
            Ref(Kind.POOL, pool.name), pool_spec, "active" if pool.active else "inactive", uuid=pool.uuid
        )
        for vol in pool.volumes:
            vol_root = ET.fromstring(vol.xml)
            vol_spec: VolumeSpec = volume_kind.parse(vol_root, pool=pool.name)
            live = Live(Ref(Kind.VOLUME, vol.name), vol_spec, "present", path=vol_root.findtext("target/path"))
            volumes[(pool.name, vol.name)] = live
            objects.setdefault(live.ref, live)
    for net in client.networks():
        net_root = ET.fromstring(net.config_xml)
        net_spec: NetworkSpec = network_kind.parse(net_root, autostart=net.autostart)
        ref = Ref(Kind.NETWORK, net.name)
        objects[ref] = Live(
            ref, net_spec, "active" if net.active else "inactive",
            uuid=net.uuid, owner=get_owner(net_root),
        )
    for dom in client.domains():
        running = dom.live_xml is not None
        dom_root = ET.fromstring(dom.config_xml)
        config = vm_kind.parse(dom_root, autostart=dom.autostart, running=running)
        live_spec = vm_kind.parse(dom.live_xml, autostart=dom.autostart, running=True) if dom.live_xml else None
        ref = Ref(Kind.VM, dom.name)
        objects[ref] = Live(
            ref, config, dom.state, uuid=dom.uuid,
            owner=get_owner(dom_root), live=live_spec, persistent=dom.persistent,
        )
    return Observed(host=client.host(), objects=objects, volumes=volumes)
