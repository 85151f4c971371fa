"""Desired VM -> libvirt domain XML, built on configs/vm_template.xml with ElementTree.

User-supplied values only ever become element text or attribute values, never
XML source: a name like `a</name><devices>` stays a (rejected) name.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from xml.etree import ElementTree as ET

from controller.kinds.base import OwnerMark, child, set_owner, template, to_xml
from controller.model import VMSpec

_BUS_PREFIX = {"virtio": "vd", "sata": "sd", "scsi": "sd"}


@dataclass(frozen=True)
class VolumeRef:
    """Where a disk's volume lives and how to read it."""

    pool: str
    format: str


@dataclass(frozen=True)
class RenderContext:
    """What rendering needs beyond the spec: host choices and what libvirt assigned."""

    owner: OwnerMark
    domain_type: str                                   # kvm | qemu | test
    console_log_dir: str
    volumes: Mapping[str, VolumeRef] = field(default_factory=dict)  # by volume name
    uuid: str | None = None                            # keep the identity on redefinition
    macs: tuple[str | None, ...] = ()                  # assigned MACs, by NIC position


def render(spec: VMSpec, ctx: RenderContext) -> str:
    root = template("vm_template.xml")
    root.set("type", ctx.domain_type)
    child(root, "name").text = spec.meta.name
    if ctx.uuid:
        root.insert(1, _element("uuid", text=ctx.uuid))
    set_owner(child(root, "metadata"), ctx.owner)
    kib = str(spec.memory // 1024)
    child(root, "memory").text = kib
    child(root, "currentMemory").text = kib
    child(root, "vcpu").text = str(spec.vcpus)
    _render_os(child(root, "os"), spec)
    devices = child(root, "devices")
    _render_console_log(devices, spec, ctx)
    # Disks and NICs go before the template's serial console, where libvirt lists them.
    serial = devices.find("serial")
    anchor = list(devices).index(serial) if serial is not None else 0
    for offset, node in enumerate(_disks(spec, ctx) + _nics(spec, ctx)):
        devices.insert(anchor + offset, node)
    return to_xml(root)


def _render_os(os_node: ET.Element, spec: VMSpec) -> None:
    if spec.firmware == "uefi":
        os_node.set("firmware", "efi")
    if spec.boot:
        ET.SubElement(os_node, "kernel").text = spec.boot.kernel
        if spec.boot.initrd:
            ET.SubElement(os_node, "initrd").text = spec.boot.initrd
        if spec.boot.cmdline:
            ET.SubElement(os_node, "cmdline").text = spec.boot.cmdline
    elif not any(d.boot_order for d in spec.disks):
        # libvirt refuses <os><boot> together with per-device boot order.
        ET.SubElement(os_node, "boot", {"dev": "hd"})


def _render_console_log(devices: ET.Element, spec: VMSpec, ctx: RenderContext) -> None:
    serial = devices.find("serial")
    if serial is None:
        return
    path = os.path.join(ctx.console_log_dir, f"{spec.meta.name}-console.log")
    serial.insert(0, ET.Element("log", {"file": path, "append": "on"}))


def _disks(spec: VMSpec, ctx: RenderContext) -> list[ET.Element]:
    nodes, used = [], {"vd": 0, "sd": 0}
    for disk in spec.disks:
        prefix = _BUS_PREFIX[disk.bus]
        dev = prefix + chr(ord("a") + used[prefix])
        used[prefix] += 1
        node = ET.Element("disk", {"type": "volume", "device": "disk"})
        volume = ctx.volumes[disk.volume]
        ET.SubElement(node, "driver", {"name": "qemu", "type": volume.format})
        ET.SubElement(node, "source", {"pool": volume.pool, "volume": disk.volume})
        ET.SubElement(node, "target", {"dev": dev, "bus": disk.bus})
        if disk.boot_order:
            ET.SubElement(node, "boot", {"order": str(disk.boot_order)})
        nodes.append(node)
    if any(d.bus == "scsi" for d in spec.disks):
        nodes.append(ET.Element("controller", {"type": "scsi", "index": "0", "model": "virtio-scsi"}))
    return nodes


def _nics(spec: VMSpec, ctx: RenderContext) -> list[ET.Element]:
    nodes = []
    for index, nic in enumerate(spec.nics):
        node = ET.Element("interface", {"type": "network"})
        mac = nic.mac or (ctx.macs[index] if index < len(ctx.macs) else None)
        if mac:
            ET.SubElement(node, "mac", {"address": mac})
        ET.SubElement(node, "source", {"network": nic.network})
        ET.SubElement(node, "model", {"type": nic.model})
        nodes.append(node)
    return nodes


def _element(tag: str, *, text: str) -> ET.Element:
    node = ET.Element(tag)
    node.text = text
    return node
