"""Volume: qcow2/raw volumes in a pool, optionally a copy-on-write clone
(qcow2 backing store) of another volume or of a base image file."""

from __future__ import annotations

from xml.etree import ElementTree as ET

from controller.kinds.base import FieldDiff, UpdateMode, child, compare, scaled, template, text, to_xml
from controller.model import Meta, Source, VolumeSpec
from controller.units import format_size

QCOW2_MAGIC = b"QFI\xfb"


def render(spec: VolumeSpec, *, backing_path: str | None, backing_format: str | None) -> str:
    """Volume XML. The backing path is resolved by the executor (a source volume's
    path is known only once it exists)."""
    root = template("volume_template.xml")
    child(root, "name").text = spec.meta.name
    child(root, "capacity").text = str(spec.size)
    child(root, "target/format").set("type", spec.format)
    if backing_path:
        backing = ET.SubElement(root, "backingStore")
        ET.SubElement(backing, "path").text = backing_path
        ET.SubElement(backing, "format", {"type": backing_format or "raw"})
    return to_xml(root)


def parse(xml: str | ET.Element, *, pool: str) -> VolumeSpec:
    """The volume as a spec; the backing path stands in source_path (the planner maps
    a source volume to its path before comparing)."""
    root = ET.fromstring(xml) if isinstance(xml, str) else xml   # observe parses once for all readers
    fmt = root.find("target/format")
    return VolumeSpec(
        meta=Meta(name=text(root, "name") or "", source=Source("<libvirt>", 0)),
        pool=pool,
        size=scaled(root.find("capacity"), default_unit="bytes"),
        format=(fmt.get("type", "raw") if fmt is not None else "raw"),
        source_path=text(root, "backingStore/path"),
    )


def diff(desired: VolumeSpec, observed: VolumeSpec, *, desired_backing: str | None) -> list[FieldDiff]:
    """Compare; `desired_backing` is the path the desired source resolves to."""
    diffs = [
        *compare("spec.pool", observed.pool, desired.pool, UpdateMode.REPLACE),
        *compare("spec.format", observed.format, desired.format, UpdateMode.REPLACE),
        *compare("spec.source", observed.source_path, desired_backing, UpdateMode.REPLACE),
    ]
    if desired.size > observed.size:
        diffs.append(FieldDiff("spec.size", format_size(observed.size), format_size(desired.size), UpdateMode.LIVE))
    elif desired.size < observed.size:
        # Shrinking a disk under a filesystem loses data: never done.
        diffs.append(
            FieldDiff("spec.size", format_size(observed.size), format_size(desired.size), UpdateMode.REFUSE)
        )
    return diffs


def image_format(path: str) -> str:
    """qcow2 or raw, from the file's magic number (libvirt needs the backing format
    spelled out: probing it is a known security hole)."""
    with open(path, "rb") as handle:
        return "qcow2" if handle.read(4) == QCOW2_MAGIC else "raw"

