"""Golden XML for every kind, and the guarantee that user values cannot inject XML."""

from __future__ import annotations

from pathlib import Path
from xml.etree import ElementTree as ET

import libvirt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.kinds import network as network_kind
from controller.kinds import pool as pool_kind
from controller.kinds import vm as vm_kind
from controller.kinds import volume as volume_kind
from controller.kinds.base import OwnerMark
from controller.model import (
    BootSpec,
    DhcpHost,
    DiskSpec,
    IPv4Spec,
    Meta,
    NetworkSpec,
    NicSpec,
    PoolSpec,
    Source,
    VMSpec,
    VolumeSpec,
)

GOLDEN = Path(__file__).parent / "golden"
OWNER = OwnerMark("/srv/infra/web.yaml")


def meta(name: str) -> Meta:
    return Meta(name=name, source=Source("web.yaml", 1))


WEB = VMSpec(
    meta=meta("web-1"), vcpus=2, memory=2 << 30, autostart=True,
    boot=BootSpec(kernel="/var/lib/iaasctl/images/vmlinuz", initrd="/var/lib/iaasctl/images/initrd.gz",
                  cmdline="console=ttyS0"),
    disks=(DiskSpec("web-1-root"), DiskSpec("web-1-data", bus="scsi", boot_order=None)),
    nics=(NicSpec("lab", mac="52:54:00:00:00:11"), NicSpec("lab", model="e1000")),
)
VOLUMES = {"web-1-root": vm_kind.VolumeRef("images", "qcow2"), "web-1-data": vm_kind.VolumeRef("images", "raw")}
LAB = NetworkSpec(
    meta=meta("lab"), mode="nat", bridge="virbr-lab", domain="lab.internal",
    ipv4=IPv4Spec(cidr="10.10.0.0/24", gateway="10.10.0.1", dhcp_start="10.10.0.100", dhcp_end="10.10.0.200",
                  hosts=(DhcpHost("52:54:00:00:00:11", "10.10.0.11", "web-1"),)),
)


def rendered() -> dict[str, str]:
    ctx = vm_kind.RenderContext(owner=OWNER, domain_type="qemu", console_log_dir="/var/log/libvirt/qemu",
                                volumes=VOLUMES)
    return {
        "vm-web-1.xml": vm_kind.render(WEB, ctx),
        "vm-uefi-boot-order.xml": vm_kind.render(
            VMSpec(meta=meta("uefi"), vcpus=1, memory=512 << 20, firmware="uefi",
                   disks=(DiskSpec("web-1-root", bus="sata", boot_order=1),)),
            ctx),
        "network-lab.xml": network_kind.render(LAB, owner=OWNER),
        "network-isolated.xml": network_kind.render(NetworkSpec(meta=meta("iso"), mode="isolated"), owner=OWNER),
        "network-bridge.xml": network_kind.render(NetworkSpec(meta=meta("br"), mode="bridge", bridge="br0"),
                                                  owner=OWNER),
        "pool-images.xml": pool_kind.render(PoolSpec(meta=meta("images"), path="/var/lib/iaasctl/pools/images")),
        "volume-clone.xml": volume_kind.render(
            VolumeSpec(meta=meta("web-1-root"), pool="images", size=10 << 30, source_volume="debian-base"),
            backing_path="/var/lib/iaasctl/pools/images/debian-base", backing_format="qcow2"),
    }


@pytest.mark.parametrize("name", sorted(rendered()))
def test_golden_xml(name: str) -> None:
    got = rendered()[name]
    golden = GOLDEN / name
    want = golden.read_text() if golden.exists() else ""
    assert got == want, f"rendered XML differs from {golden}\n--- got ---\n{got}\n--- want ---\n{want}"


def test_rendered_xml_parses_back_to_the_spec() -> None:
    """render -> parse is the identity on every field the manifest can say."""
    ctx = vm_kind.RenderContext(owner=OWNER, domain_type="qemu", console_log_dir="/tmp", volumes=VOLUMES)
    back = vm_kind.parse(vm_kind.render(WEB, ctx), autostart=True, running=True)
    assert vm_kind.diff(WEB, back) == []
    assert network_kind.diff(LAB, network_kind.parse(network_kind.render(LAB, owner=OWNER), autostart=True)) == []


HOSTILE = "a</name><devices><disk type='file'><source file='/etc/shadow'/></disk></devices><name>x"


def test_hostile_values_stay_text() -> None:
    """A name or path carrying markup is escaped by the XML library, never spliced in:
    libvirt's test driver defines the domain and its name round-trips unchanged."""
    spec = VMSpec(meta=meta(HOSTILE), vcpus=1, memory=64 << 20,
                  boot=BootSpec(kernel="/k'\"><evil/>", cmdline="x</cmdline><evil/>"))
    ctx = vm_kind.RenderContext(owner=OwnerMark("</owner><evil/>"), domain_type="test", console_log_dir="/tmp")
    xml = vm_kind.render(spec, ctx)
    root = ET.fromstring(xml)
    assert root.findtext("name") == HOSTILE
    assert root.find(".//evil") is None
    assert root.findall("devices/disk") == []
    # libvirt itself refuses '/' in names, so the round trip uses a slash-free hostile name.
    name = "a&b<c>'\""
    conn = libvirt.open("test:///default")
    try:
        dom = conn.defineXML(vm_kind.render(VMSpec(meta=meta(name), vcpus=1, memory=64 << 20), ctx))
        assert dom.name() == name
        assert ET.fromstring(dom.XMLDesc(0)).findall("devices/disk") == []
    finally:
        conn.close()


@given(text=st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=60))
@settings(max_examples=200, deadline=None)
def test_any_text_in_any_field_round_trips_as_text(text: str) -> None:
    """Whatever a kernel command line, path or owner string holds, it stays the value
    of its element or attribute (the builder never splices source text)."""
    spec = VMSpec(meta=meta("fuzz"), vcpus=1, memory=64 << 20,
                  boot=BootSpec(kernel="/k/" + text, initrd="/i/" + text, cmdline=text))
    ctx = vm_kind.RenderContext(owner=OwnerMark(text), domain_type="test", console_log_dir="/tmp")
    root = ET.fromstring(vm_kind.render(spec, ctx))
    assert (root.findtext("os/cmdline") or "") == text   # an empty command line is simply left out
    assert root.findtext("os/kernel") == "/k/" + text
    assert root.find("devices/disk") is None and root.find(".//evil") is None
