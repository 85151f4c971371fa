"""Shared vocabulary of the kind modules: update modes, field differences,
the ownership marker and the base XML templates.

`diff` functions return FieldDiff values; they are pure and say, per field, how a
difference can be applied (UpdateMode). Which mode a field has is declared as data
in each kind module, not decided in branches of the executor.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from controller.resources import data_dir

# Domain and network XML carry this element in <metadata>: ownership that survives a lost state file.
OWNER_NS = "urn:iaasctl:owner:1"
ET.register_namespace("iaasctl", OWNER_NS)


class UpdateMode(enum.Enum):
    LIVE = "live"          # applied in place, nothing restarts
    RESTART = "restart"    # applied to the definition; the running object restarts to use it
    REPLACE = "replace"    # only by deleting and re-creating (destroys data)
    REFUSE = "refuse"      # never applied (a volume shrink)


@dataclass(frozen=True)
class FieldDiff:
    """One field that differs: `old` is what the host has, `new` what the manifest says,
    both as shown to the user, and `mode` how the difference can be applied."""

    path: str
    old: Any
    new: Any
    mode: UpdateMode


@dataclass(frozen=True)
class OwnerMark:
    """What the controller wrote into an object it created."""

    source: str


def configs_dir() -> Path:
    return data_dir("configs", env="IAASCTL_CONFIGS")


@functools.cache
def _template_text(name: str) -> str:
    return (configs_dir() / name).read_text()


def template(name: str) -> ET.Element:
    """A fresh, mutable copy of a base template from configs/."""
    return ET.fromstring(_template_text(name))


def to_xml(root: ET.Element) -> str:
    ET.indent(root)
    return ET.tostring(root, encoding="unicode")


def set_owner(metadata: ET.Element, mark: OwnerMark) -> None:
    for old in metadata.findall(f"{{{OWNER_NS}}}owner"):
        metadata.remove(old)
    ET.SubElement(metadata, f"{{{OWNER_NS}}}owner", {"source": mark.source})


def get_owner(root: ET.Element) -> OwnerMark | None:
    found = root.find(f"metadata/{{{OWNER_NS}}}owner")
    if found is None:
        return None
    return OwnerMark(source=found.get("source", ""))


def child(root: ET.Element, path: str) -> ET.Element:
    """A node the template must have; a clear error when someone edited it away."""
    node = root.find(path)
    if node is None:
        raise ValueError(f"base template <{root.tag}> in {configs_dir()} has no <{path}>")
    return node


def text(root: ET.Element, path: str) -> str | None:
    node = root.find(path)
    return None if node is None or node.text is None else node.text.strip()


_UNIT_FACTORS = {
    "b": 1, "bytes": 1, "k": 1 << 10, "kib": 1 << 10, "kb": 1000, "m": 1 << 20, "mib": 1 << 20,
    "mb": 1000**2, "g": 1 << 30, "gib": 1 << 30, "gb": 1000**3, "t": 1 << 40, "tib": 1 << 40, "tb": 1000**4,
}


def scaled(node: ET.Element | None, *, default_unit: str) -> int:
    """Bytes from a libvirt scaled integer (`<memory unit='KiB'>`, `<capacity unit='bytes'>`)."""
    if node is None or node.text is None:
        return 0
    unit = (node.get("unit") or default_unit).lower()
    return int(node.text.strip()) * _UNIT_FACTORS[unit]


def compare(path: str, old: Any, new: Any, mode: UpdateMode) -> list[FieldDiff]:
    return [] if old == new else [FieldDiff(path, old, new, mode)]
