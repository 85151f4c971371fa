"""libvirt domain XML -> the VMSpec shape, so that the planner compares like with like.

Devices the controller does not render (a file-backed disk, a bridge NIC someone
attached by hand) are kept, spelled so that they show up as differences.
"""

from __future__ import annotations

from xml.etree import ElementTree as ET

from controller.kinds.base import scaled, text
from controller.model import BootSpec, DiskSpec, Meta, NicSpec, Source, VMSpec


def parse(xml: str | ET.Element, *, autostart: bool, running: bool) -> VMSpec:
    root = ET.fromstring(xml) if isinstance(xml, str) else xml   # observe parses once for all readers
    os_node = root.find("os")
    return VMSpec(
        meta=Meta(name=text(root, "name") or "", source=Source("<libvirt>", 0)),
        vcpus=int(text(root, "vcpu") or 1),
        memory=scaled(root.find("memory"), default_unit="KiB"),
        power="running" if running else "stopped",
        autostart=autostart,
        firmware=_firmware(os_node),
        boot=_boot(os_node),
        disks=tuple(_disk(d) for d in root.findall("devices/disk") if d.get("device", "disk") == "disk"),
        nics=tuple(_nic(i) for i in root.findall("devices/interface")),
    )


def _firmware(os_node: ET.Element | None) -> str:
    if os_node is None:
        return "bios"
    if os_node.get("firmware") == "efi" or os_node.find("loader[@type='pflash']") is not None:
        return "uefi"
    return "bios"


def _boot(os_node: ET.Element | None) -> BootSpec | None:
    if os_node is None or not text(os_node, "kernel"):
        return None
    return BootSpec(
        kernel=text(os_node, "kernel") or "",
        initrd=text(os_node, "initrd"),
        cmdline=text(os_node, "cmdline"),
    )


def _disk(node: ET.Element) -> DiskSpec:
    source = node.find("source")
    target = node.find("target")
    boot = node.find("boot")
    if node.get("type") == "volume" and source is not None:
        volume = source.get("volume", "")
    else:
        where = "" if source is None else (source.get("file") or source.get("dev") or source.get("name") or "")
        volume = f"{node.get('type', 'file')}:{where}"
    return DiskSpec(
        volume=volume,
        bus=(target.get("bus", "virtio") if target is not None else "virtio"),
        boot_order=int(boot.get("order", "0")) or None if boot is not None else None,
    )


def _nic(node: ET.Element) -> NicSpec:
    source = node.find("source")
    mac = node.find("mac")
    model = node.find("model")
    kind = node.get("type", "network")
    if kind == "network" and source is not None:
        network = source.get("network", "")
    else:
        network = f"{kind}:{source.get('bridge') or source.get('dev') or '' if source is not None else ''}"
    return NicSpec(
        network=network,
        mac=(mac.get("address", "").lower() if mac is not None else None),
        model=(model.get("type", "") if model is not None else ""),
    )
