"""Status: the state store (what was applied, by whom, with what result) merged with
live libvirt state, for `get` and `describe` — desired and live side by side."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, UTC
from typing import Any

from controller.adapter import Libvirt
from controller.errors import IaasError
from controller.kinds import vm as vm_kind
from controller.model import Kind, NetworkSpec, PoolSpec, Ref, VMSpec, VolumeSpec, plain
from controller.observe import Live, Observed
from controller.state import ObjectStatus, StateStore
from controller.units import format_size

COLUMNS = {
    Kind.VM: ("NAME", "MANAGED", "DESIRED", "STATE", "VCPUS", "MEMORY", "IP", "CONDITION", "LAST"),
    Kind.NETWORK: ("NAME", "MANAGED", "STATE", "MODE", "CIDR", "BRIDGE", "AUTOSTART", "LAST"),
    Kind.VOLUME: ("NAME", "MANAGED", "POOL", "SIZE", "FORMAT", "BACKING", "LAST"),
    Kind.POOL: ("NAME", "MANAGED", "STATE", "PATH", "AUTOSTART", "LAST"),
}


Addresses = Callable[[str], list[tuple[str, str]]]   # a running VM's name -> its (mac, ipv4) pairs


def addresses_from(client: Libvirt) -> Addresses:
    """A running VM's DHCP leases, asked of libvirt; none when it cannot say."""
    def addresses(name: str) -> list[tuple[str, str]]:
        try:
            return client.domain_addresses(name)
        except IaasError:
            return []

    return addresses


def rows(kind: Kind, observed: Observed, store: StateStore, addresses: Addresses, *, name: str | None = None
         ) -> list[dict[str, Any]]:
    """One row per object of a kind: live objects and owned ones that are missing."""
    statuses = {s.ref: s for s in store.statuses(kind=kind, name=name)}
    lives: dict[Ref, Live] = {}
    if kind is Kind.VOLUME:
        for live in observed.volumes.values():
            lives.setdefault(live.ref, live)
    else:
        lives = {r: live for r, live in observed.objects.items() if r.kind is kind}
    refs = sorted(set(lives) | set(statuses), key=lambda r: r.name)
    return [_row(ref, lives.get(ref), statuses.get(ref), addresses) for ref in refs if name in (None, ref.name)]


def _row(ref: Ref, live: Live | None, status: ObjectStatus | None, addresses: Addresses) -> dict[str, Any]:
    row: dict[str, Any] = {
        "name": ref.name,
        "managed": "yes" if status or (live and live.owner) else "no",
        "state": live.state if live else "missing",
        "last": _last(status),
    }
    spec = live.spec if live else None
    if isinstance(spec, VMSpec) and live is not None:
        desired = (status.spec or {}).get("spec", {}) if status else {}
        row.update(desired=desired.get("power"), vcpus=spec.vcpus, memory=format_size(spec.memory),
                   ip=(",".join(ip for _, ip in addresses(ref.name)) or None) if live.running else None,
                   condition=_vm_condition(live))
    elif isinstance(spec, NetworkSpec):
        row.update(mode=spec.mode, cidr=spec.ipv4.cidr if spec.ipv4 else None, bridge=spec.bridge,
                   autostart=spec.autostart)
    elif isinstance(spec, VolumeSpec):
        row.update(pool=spec.pool, size=format_size(spec.size), format=spec.format, backing=spec.source_path,
                   state="present")
    elif isinstance(spec, PoolSpec):
        row.update(path=spec.path, autostart=spec.autostart)
    return row


def _last(status: ObjectStatus | None) -> str | None:
    if status is None or status.last_result is None:
        return None
    if status.last_result == "ok":
        return f"{status.last_action}: ok"
    return f"{status.last_action}: failed: {status.last_error}"


def _vm_condition(live: Live) -> str:
    if live.live is not None and isinstance(live.spec, VMSpec) and vm_kind.restart_pending(live.spec, live.live):
        return "RestartRequired"
    return "Ready" if live.running else "Stopped"


def describe(ref: Ref, observed: Observed, store: StateStore, addresses: Addresses) -> dict[str, Any] | None:
    """Everything known about one object, or None when neither libvirt nor the store knows it."""
    live = observed.get(ref)
    with store.snapshot():   # the conditions, status and events of one daemon pass, not of two
        status = store.status(ref)
        found = store.conditions(ref)
        retry = store.resource_statuses().get(ref)
        events = store.events(ref, limit=10)
        history = store.history(ref)
    if live is None and status is None:
        return None
    doc: dict[str, Any] = {"kind": ref.kind.value, "name": ref.name}
    doc["managed"] = bool(status or (live and live.owner))
    if status:
        doc["source"] = status.source
        doc["protect"] = status.protect
        doc["desired"] = manifest_view(status.spec) if status.spec else None
        doc["lastApplied"] = _when(status.last_applied)
        doc["lastResult"] = _last(status)
    if live:
        live_doc: dict[str, Any] = {"state": live.state, "uuid": live.uuid}
        definition = plain(live.spec)
        if isinstance(definition, dict):
            definition.pop("restart_policy", None)  # a manifest policy, not something libvirt has
        live_doc["definition"] = manifest_view({"spec": definition})["spec"]
        if live.path:
            live_doc["path"] = live.path
        if isinstance(live.spec, VMSpec):
            live_doc["condition"] = _vm_condition(live)
            if live.running:
                live_doc["addresses"] = [{"mac": m, "ip": ip} for m, ip in addresses(ref.name)]
        doc["live"] = live_doc
    else:
        doc["live"] = {"state": "missing"}
    if found:
        doc["conditions"] = [{"type": c.type, "status": c.status, "reason": c.reason, "message": c.message,
                              "lastTransitionTime": _when(c.since)} for c in found]
    if retry is not None:
        doc["status"] = {"generation": retry.generation, "observedGeneration": retry.observed_generation,
                         "retries": retry.retries, "nextRetry": _when(retry.next_retry),
                         "permanentError": retry.permanent, "lastError": retry.last_error}
    if events:
        doc["events"] = [{"time": _when(e.at), "type": e.type, "reason": e.reason, "message": e.message}
                         for e in events]
    doc["history"] = [
        {"at": _when(h.at), "action": h.action, "result": h.result, "error": h.error} for h in history
    ]
    return doc


_RENAMES = {"nics": "networks", "restart_policy": "restartPolicy", "boot_order": "bootOrder",
            "dhcp_start": "dhcpStart", "dhcp_end": "dhcpEnd"}


def manifest_view(document: dict[str, Any]) -> dict[str, Any]:
    """A stored spec as the manifest spells it: field names, sizes in binary units,
    no unset fields, `source: {volume|path}`."""
    return {k: _view(k, v) for k, v in document.items() if v is not None}


def _view(key: str, value: Any) -> Any:
    if isinstance(value, dict):
        if "source_volume" in value or "source_path" in value:
            value = dict(value)
            source = {"volume": value.pop("source_volume"), "path": value.pop("source_path")}
            value["source"] = {k: v for k, v in source.items() if v} or None
        return {_RENAMES.get(k, k): _view(k, v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_view(key, v) for v in value]
    if key in ("memory", "size") and isinstance(value, int):
        return format_size(value)
    return value


def _when(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, tz=UTC).isoformat(timespec="seconds")
