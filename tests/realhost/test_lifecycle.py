"""End to end on a real host: a pool, qcow2 volumes with copy-on-write clones, a NAT
network with a static DHCP host, and a VM that boots the test guest and gets its lease."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import libvirt

from tests.realhost.conftest import GUEST, PREFIX, URI, WORK, Host, qemu_img_info, wait_for

POOL_DIR = WORK / "pools" / f"{PREFIX}pool"
BASE_IMAGE = WORK / f"{PREFIX}base-image.qcow2"
VM_MAC = "52:54:00:fa:00:10"
VM_IP = "10.251.0.10"
CONSOLE_LOG = Path(f"/var/log/libvirt/qemu/{PREFIX}vm-console.log")

STORAGE = f"""\
apiVersion: iaas/v1
kind: StoragePool
metadata:
  name: {PREFIX}pool
spec:
  path: {POOL_DIR}
---
apiVersion: iaas/v1
kind: Volume
metadata:
  name: {PREFIX}base
spec:
  pool: {PREFIX}pool
  size: 64MiB
---
apiVersion: iaas/v1
kind: Volume
metadata:
  name: {PREFIX}root
spec:
  pool: {PREFIX}pool
  size: 128MiB
  source:
    volume: {PREFIX}base
---
apiVersion: iaas/v1
kind: Volume
metadata:
  name: {PREFIX}from-file
spec:
  pool: {PREFIX}pool
  size: FROM_FILE_SIZE
  source:
    path: {BASE_IMAGE}
---
apiVersion: iaas/v1
kind: Volume
metadata:
  name: {PREFIX}data
spec:
  pool: {PREFIX}pool
  size: DATA_SIZE
  format: raw
"""

NETWORK = f"""\
apiVersion: iaas/v1
kind: Network
metadata:
  name: {PREFIX}net
spec:
  mode: nat
  ipv4:
    cidr: 10.251.0.0/24
    dhcp:
      start: 10.251.0.100
      end: 10.251.0.200
    hosts:
      - mac: "{VM_MAC}"
        ip: {VM_IP}
        hostname: guest
"""


def storage(*, data: str, from_file: str = "128MiB") -> str:
    return STORAGE.replace("DATA_SIZE", data).replace("FROM_FILE_SIZE", from_file)


def vm(*, memory: str = "128MiB", power: str = "running") -> str:
    return f"""\
apiVersion: iaas/v1
kind: VirtualMachine
metadata:
  name: {PREFIX}vm
spec:
  vcpus: 1
  memory: {memory}
  power: {power}
  restartPolicy: auto
  boot:
    kernel: {GUEST / 'vmlinuz'}
    initrd: {GUEST / 'initrd.gz'}
    cmdline: console=ttyS0
  disks:
    - volume: {PREFIX}root
    - volume: {PREFIX}from-file
  networks:
    - network: {PREFIX}net
      mac: "{VM_MAC}"
"""


def guest_ip(host: Host) -> str | None:
    rows = [r for r in host.get("vms") if r["name"] == f"{PREFIX}vm"]
    return rows[0]["ip"] if rows else None


def domain_state() -> tuple[str, int]:
    conn = libvirt.open(URI)
    try:
        dom = conn.lookupByName(f"{PREFIX}vm")
        state = dom.state()[0]
        memory = dom.info()[2] if dom.isActive() else 0
        return ("running" if state == libvirt.VIR_DOMAIN_RUNNING else "other", memory)
    finally:
        conn.close()


def test_full_lifecycle_on_a_real_host(host: Host) -> None:
    BASE_IMAGE.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(BASE_IMAGE), "32M"], check=True)
    BASE_IMAGE.chmod(0o644)
    CONSOLE_LOG.unlink(missing_ok=True)
    host.write("storage.yaml", storage(data="16MiB"))
    host.write("network.yaml", NETWORK)
    host.write("vm.yaml", vm())

    host.iaasctl("validate", str(host.specs), check=0)
    planned = host.iaasctl("plan", "-f", str(host.specs), check=2)
    assert f"+ VirtualMachine/{PREFIX}vm" in planned.stdout
    host.iaasctl("apply", "-f", str(host.specs), check=0)
    host.iaasctl("plan", "-f", str(host.specs), check=0)

    # copy-on-write clones: qcow2 overlays whose backing files are the sources
    root = qemu_img_info(str(POOL_DIR / f"{PREFIX}root"))
    assert root["format"] == "qcow2" and root["virtual-size"] == 128 << 20
    assert root["backing-filename"] == str(POOL_DIR / f"{PREFIX}base")
    from_file = qemu_img_info(str(POOL_DIR / f"{PREFIX}from-file"))
    assert from_file["backing-filename"] == str(BASE_IMAGE)

    # the guest boots, takes its reserved lease, and `get vms` shows the address
    ip = wait_for("the guest's DHCP lease in `iaasctl get vms`", lambda: guest_ip(host), timeout=180)
    assert ip == VM_IP
    assert "IAASCTL-GUEST-BOOTED" in CONSOLE_LOG.read_text(errors="replace")
    conn = libvirt.open(URI)
    try:  # ownership lives inside the objects too, so it survives a lost state file
        assert "urn:iaasctl:owner:1" in conn.networkLookupByName(f"{PREFIX}net").XMLDesc(0)
        assert "urn:iaasctl:owner:1" in conn.lookupByName(f"{PREFIX}vm").XMLDesc(0)
    finally:
        conn.close()
    nets = {r["name"]: r for r in host.get("networks")}
    assert nets[f"{PREFIX}net"]["state"] == "active" and nets[f"{PREFIX}net"]["managed"] == "yes"

    # volumes grow in place, a disk of the running VM through the VM;
    # a shrink is refused and changes nothing
    host.write("storage.yaml", storage(data="32MiB", from_file="160MiB"))
    grown = host.iaasctl("apply", "-f", str(host.specs), check=0)
    assert f"live through VirtualMachine/{PREFIX}vm" in grown.stdout
    assert qemu_img_info(str(POOL_DIR / f"{PREFIX}data"))["virtual-size"] == 32 << 20
    assert qemu_img_info(str(POOL_DIR / f"{PREFIX}from-file"))["virtual-size"] == 160 << 20
    host.iaasctl("plan", "-f", str(host.specs), check=0)
    host.write("storage.yaml", storage(data="8MiB", from_file="160MiB"))
    shrink = host.iaasctl("apply", "-f", str(host.specs), check=1)
    assert "shrinking a volume from 32MiB to 8MiB is refused" in shrink.stdout + shrink.stderr
    assert qemu_img_info(str(POOL_DIR / f"{PREFIX}data"))["virtual-size"] == 32 << 20
    host.write("storage.yaml", storage(data="32MiB", from_file="160MiB"))

    # memory change with restartPolicy auto: the VM restarts with the new size
    host.write("vm.yaml", vm(memory="192MiB"))
    host.iaasctl("apply", "-f", str(host.specs), check=0)
    assert domain_state() == ("running", 192 * 1024)
    host.iaasctl("plan", "-f", str(host.specs), check=0)

    # power: stopped is a graceful shutdown (the guest powers off on ACPI)
    host.write("vm.yaml", vm(memory="192MiB", power="stopped"))
    host.iaasctl("apply", "-f", str(host.specs), check=0)
    assert domain_state()[0] == "other"

    # removing every manifest tears everything down, once explicitly allowed
    for name in ("vm.yaml", "network.yaml", "storage.yaml"):
        host.remove(name)
    refused = host.iaasctl("apply", "-f", str(host.specs), check=1)
    assert "--allow-mass-delete" in refused.stdout + refused.stderr
    host.iaasctl("apply", "-f", str(host.specs), "--allow-mass-delete", check=0)
    conn = libvirt.open(URI)
    try:
        leftovers = [d.name() for d in conn.listAllDomains(0)] + [n.name() for n in conn.listAllNetworks(0)] + [
            p.name() for p in conn.listAllStoragePools(0)]
    finally:
        conn.close()
    assert [name for name in leftovers if name.startswith(PREFIX)] == []
    assert not (POOL_DIR / f"{PREFIX}root").exists()
    assert BASE_IMAGE.exists(), "a base image the user owns is never deleted"


def test_unmanaged_domain_is_left_alone_and_named_conflicts(host: Host) -> None:
    name = f"{PREFIX}unmanaged"
    xml = (f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory>"
           "<os><type>hvm</type></os></domain>")
    conn = libvirt.open(URI)
    try:
        conn.defineXML(xml)
    finally:
        conn.close()
    host.write("network.yaml", NETWORK)
    host.iaasctl("apply", "-f", str(host.specs), check=0)
    host.remove("network.yaml")
    host.iaasctl("apply", "-f", str(host.specs), check=0)
    host.write("vm.yaml", f"""\
apiVersion: iaas/v1
kind: VirtualMachine
metadata:
  name: {name}
spec:
  vcpus: 1
  memory: 64MiB
  power: stopped
""")
    conflict = host.iaasctl("apply", "-f", str(host.specs), check=1)
    assert "not managed by iaasctl" in conflict.stdout + conflict.stderr
    conn = libvirt.open(URI)
    try:
        assert conn.lookupByName(name).XMLDesc(0).count("iaasctl:owner") == 0
    finally:
        conn.close()


def test_network_dhcp_range_change_restarts_the_network(host: Host) -> None:
    host.write("network.yaml", NETWORK)
    host.iaasctl("apply", "-f", str(host.specs), check=0)
    host.write("network.yaml", NETWORK.replace("10.251.0.200", "10.251.0.150").replace(
        "hostname: guest", "hostname: guest2"))
    planned = host.iaasctl("plan", "-f", str(host.specs), check=2)
    assert "[restart]" in planned.stdout
    host.iaasctl("apply", "-f", str(host.specs), check=0)
    host.iaasctl("plan", "-f", str(host.specs), check=0)


def test_uefi_vm_starts_with_firmware_chosen_by_libvirt(host: Host) -> None:
    host.write("uefi.yaml", f"""\
apiVersion: iaas/v1
kind: VirtualMachine
metadata:
  name: {PREFIX}uefi
spec:
  vcpus: 1
  memory: 128MiB
  firmware: uefi
""")
    host.iaasctl("apply", "-f", str(host.specs), check=0)
    host.iaasctl("plan", "-f", str(host.specs), check=0)
    conn = libvirt.open(URI)
    try:
        dom = conn.lookupByName(f"{PREFIX}uefi")
        assert dom.isActive()
        assert "<loader" in dom.XMLDesc(0), "libvirt picked an OVMF image for the running VM"
    finally:
        conn.close()
    host.iaasctl("delete", "-f", str(host.specs), "--yes", check=0)
    host.iaasctl("get", "vms", check=0)


def test_apply_killed_at_any_step_converges_on_the_next_run(host: Host) -> None:
    """SIGKILL the apply after its first, second, ... completed step: the next apply
    finishes the job with no duplicate, no orphan and no conflict (the journal)."""
    BASE_IMAGE.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(BASE_IMAGE), "32M"], check=True)
    BASE_IMAGE.chmod(0o644)
    host.write("storage.yaml", storage(data="16MiB"))
    host.write("network.yaml", NETWORK)
    host.write("vm.yaml", vm())
    env = dict(os.environ, IAASCTL_DOMAIN_TYPE="qemu")
    for steps in (1, 3, 5):
        cmd = [sys.executable, "-m", "controller", "--connect", URI, "--state-dir", str(host.state),
               "apply", "-f", str(host.specs), "--yes", "--parallelism", "1"]
        child = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
        assert child.stderr is not None
        done = 0
        for line in child.stderr:
            done += line.lstrip().startswith("ok ")
            if done == steps:
                child.kill()
                break
        child.wait(timeout=60)
        rerun = host.iaasctl("apply", "-f", str(host.specs), "--yes", check=0)
        assert "not managed by iaasctl" not in rerun.stdout + rerun.stderr
        host.iaasctl("plan", "-f", str(host.specs), check=0)
        conn = libvirt.open(URI)
        try:
            pool = conn.storagePoolLookupByName(f"{PREFIX}pool")
            pool.refresh(0)
            assert sorted(v.name() for v in pool.listAllVolumes(0)) == sorted(
                f"{PREFIX}{n}" for n in ("base", "root", "from-file", "data"))
            assert [d.name() for d in conn.listAllDomains(0) if d.name().startswith(PREFIX)] == [f"{PREFIX}vm"]
        finally:
            conn.close()
        host.iaasctl("delete", "-f", str(host.specs), "--yes", check=0)
