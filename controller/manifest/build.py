"""Stage 3 of manifest loading: a schema-valid document -> a typed spec (`controller.model`).

Renames manifest fields to model fields (`allowReplace` -> `allow_replace`,
`networks` -> `nics`, ...), normalises spelling (sizes to bytes, MACs to lower
case, labels to sorted pairs) and checks the one per-document rule a schema cannot
state: a consistent address plan (see `ipv4`). A field the manifest leaves out is
not passed, so the model's dataclass defaults apply (the schemas' `default`s
document the same values; a test keeps the two in agreement).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from controller.errors import Problem
from controller.manifest.ipv4 import build_ipv4
from controller.manifest.located import Document
from controller.model import (
    BootSpec,
    DiskSpec,
    Kind,
    Meta,
    NetworkSpec,
    NicSpec,
    PoolSpec,
    Source,
    Spec,
    VMSpec,
    VolumeSpec,
)
from controller.units import parse_size

Built = tuple[Spec | None, list[Problem]]


def build(doc: Document, kind: Kind) -> Built:
    """The spec of a document the schema accepted, or None with the findings."""
    value: Mapping[str, Any] = doc.value  # type: ignore[assignment]  # the schema made it a mapping
    return _BUILDERS[kind](doc, _meta(doc, value["metadata"]), value["spec"])


def _meta(doc: Document, metadata: Mapping[str, Any]) -> Meta:
    return Meta(
        name=metadata["name"],
        source=Source(doc.file, doc.line),
        labels=tuple(sorted(metadata.get("labels", {}).items())),
        field_lines=doc.field_lines(),   # a plain dict, so that specs pickle (the manifest cache)
        **_given(metadata, protect="protect", allow_replace="allowReplace"),
    )


def _given(value: Mapping[str, Any], **fields: str) -> dict[str, Any]:
    """Model keyword arguments for the manifest fields that are present: `model_name="manifestName"`."""
    return {model: value[manifest] for model, manifest in fields.items() if manifest in value}


def _pool(doc: Document, meta: Meta, spec: Mapping[str, Any]) -> Built:
    return PoolSpec(meta=meta, path=spec["path"], **_given(spec, type="type", autostart="autostart")), []


def _volume(doc: Document, meta: Meta, spec: Mapping[str, Any]) -> Built:
    source = spec.get("source", {})
    return VolumeSpec(
        meta=meta, pool=spec["pool"], size=parse_size(spec["size"]),
        source_volume=source.get("volume"), source_path=source.get("path"),
        **_given(spec, format="format"),
    ), []


def _network(doc: Document, meta: Meta, spec: Mapping[str, Any]) -> Built:
    ipv4, problems = build_ipv4(doc, spec["ipv4"]) if "ipv4" in spec else (None, [])
    if problems:
        return None, problems
    return NetworkSpec(
        meta=meta, mode=spec["mode"], ipv4=ipv4,
        **_given(spec, bridge="bridge", domain="domain", autostart="autostart"),
    ), []


def _vm(doc: Document, meta: Meta, spec: Mapping[str, Any]) -> Built:
    boot = spec.get("boot")
    return VMSpec(
        meta=meta, vcpus=spec["vcpus"], memory=parse_size(spec["memory"]),
        boot=BootSpec(**_given(boot, kernel="kernel", initrd="initrd", cmdline="cmdline")) if boot else None,
        disks=tuple(DiskSpec(**_given(d, volume="volume", bus="bus", boot_order="bootOrder"))
                    for d in spec.get("disks", [])),
        nics=tuple(NicSpec(**_given(n, network="network", model="model"),
                           mac=n["mac"].lower() if "mac" in n else None)
                   for n in spec.get("networks", [])),
        **_given(spec, power="power", restart_policy="restartPolicy", autostart="autostart",
                 firmware="firmware"),
    ), []


_BUILDERS: dict[Kind, Callable[[Document, Meta, Mapping[str, Any]], Built]] = {
    Kind.POOL: _pool,
    Kind.VOLUME: _volume,
    Kind.NETWORK: _network,
    Kind.VM: _vm,
}
