"""StoragePool: directory pools. Render, parse back, compare."""

from __future__ import annotations

from xml.etree import ElementTree as ET

from controller.kinds.base import FieldDiff, UpdateMode, child, compare, template, text, to_xml
from controller.model import Meta, PoolSpec, Source

# Field -> how a difference is applied. The path of a pool is where its data lives:
# changing it means a different pool.
MODES = {"spec.type": UpdateMode.REPLACE, "spec.path": UpdateMode.REPLACE, "spec.autostart": UpdateMode.LIVE}


def render(spec: PoolSpec) -> str:
    root = template("pool_template.xml")
    root.set("type", spec.type)
    child(root, "name").text = spec.meta.name
    child(root, "target/path").text = spec.path
    return to_xml(root)


def parse(xml: str, *, autostart: bool) -> PoolSpec:
    root = ET.fromstring(xml)
    name = text(root, "name") or ""
    return PoolSpec(
        meta=Meta(name=name, source=Source("<libvirt>", 0)),
        type=root.get("type", ""),
        path=text(root, "target/path") or "",
        autostart=autostart,
    )


def diff(desired: PoolSpec, observed: PoolSpec) -> list[FieldDiff]:
    return [
        *compare("spec.type", observed.type, desired.type, MODES["spec.type"]),
        *compare("spec.path", observed.path, desired.path, MODES["spec.path"]),
        *compare("spec.autostart", observed.autostart, desired.autostart, MODES["spec.autostart"]),
    ]

