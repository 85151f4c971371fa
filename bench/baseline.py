"""The floor: a plain libvirt-python script doing the same libvirt work as iaasctl.

Each command does, with nothing but libvirt-python and f-strings of fixed XML, what
the corresponding iaasctl command does for the benchmark's set of objects; it runs
as its own process, like `iaasctl`, so both pay for starting Python. `--threads N`
runs the per-VM work on N threads (the thread-pooled variant); 1 is sequential. With
`--connection-each` each thread has a connection of its own, as iaasctl's workers
do: on one shared connection libvirtd may hold a quick call until another thread's
slow one returns.

    python bench/baseline.py converge|noop|memory|teardown --n 10 --prefix bench- ...
"""

from __future__ import annotations

import argparse
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import libvirt

libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


def pool_xml(a: argparse.Namespace) -> str:
    return f"<pool type='dir'><name>{a.prefix}pool</name><target><path>{a.pool_dir}</path></target></pool>"


def network_xml(a: argparse.Namespace) -> str:
    return (f"<network><name>{a.prefix}net</name><forward mode='nat'/>"
            f"<ip address='10.253.0.1' prefix='24'><dhcp><range start='10.253.0.100' end='10.253.0.250'/>"
            f"</dhcp></ip></network>")


def volume_xml(name: str, a: argparse.Namespace) -> str:
    return (f"<volume><name>{name}</name><capacity unit='bytes'>{1 << 30}</capacity>"
            f"<target><format type='qcow2'/></target><backingStore><path>{a.base_image}</path>"
            f"<format type='qcow2'/></backingStore></volume>")


def domain_xml(i: int, a: argparse.Namespace, *, memory_mib: int, uuid: str | None = None) -> str:
    name = f"{a.prefix}vm-{i}"
    uuid_el = f"<uuid>{uuid}</uuid>" if uuid else ""
    # the guest iaasctl defines from configs/vm_template.xml: an APIC, and the console
    # kept in a log file by virtlogd (until 2026-12-01 the floor's guests had neither)
    log = f"/var/log/libvirt/qemu/{name}-console.log"
    return (f"<domain type='qemu'><name>{name}</name>{uuid_el}<memory unit='KiB'>{memory_mib * 1024}</memory>"
            f"<vcpu>1</vcpu><os><type>hvm</type><kernel>{a.kernel}</kernel><initrd>{a.initrd}</initrd>"
            f"<cmdline>console=ttyS0</cmdline></os><features><acpi/><apic/></features><devices>"
            f"<disk type='volume' device='disk'><driver name='qemu' type='qcow2'/>"
            f"<source pool='{a.prefix}pool' volume='{name}-root'/><target dev='vda' bus='virtio'/></disk>"
            f"<interface type='network'><source network='{a.prefix}net'/><model type='virtio'/></interface>"
            f"<serial type='pty'><log file='{log}' append='on'/></serial>"
            f"<console type='pty'><log file='{log}' append='on'/></console>"
            f"<memballoon model='virtio'/></devices></domain>")


def per_vm(a: argparse.Namespace, conn: libvirt.virConnect, work) -> None:  # type: ignore[no-untyped-def]
    """work(connection, i) for every VM: in turn, or on a.threads threads."""
    if a.threads == 1:
        for i in range(a.n):
            work(conn, i)
        return
    local, opened = threading.local(), []

    def run(i: int) -> None:
        if a.connection_each and not hasattr(local, "conn"):
            local.conn = libvirt.open(a.uri)
            opened.append(local.conn)
        work(local.conn if a.connection_each else conn, i)

    with ThreadPoolExecutor(a.threads) as pool:
        list(pool.map(run, range(a.n)))
    for own in opened:
        own.close()


def converge(conn: libvirt.virConnect, a: argparse.Namespace) -> None:
    pool = conn.storagePoolDefineXML(pool_xml(a), 0)
    pool.build(0)
    pool.create(0)
    pool.setAutostart(1)
    net = conn.networkDefineXML(network_xml(a))
    net.create()
    net.setAutostart(1)

    def vm(c: libvirt.virConnect, i: int) -> None:
        c.storagePoolLookupByName(f"{a.prefix}pool").createXML(volume_xml(f"{a.prefix}vm-{i}-root", a), 0)
        c.defineXML(domain_xml(i, a, memory_mib=128)).create()

    per_vm(a, conn, vm)


def noop(conn: libvirt.virConnect, a: argparse.Namespace) -> None:
    """What deciding "nothing to do" minimally needs: list everything, read every XML."""
    for dom in conn.listAllDomains(0):
        dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        if dom.isActive():
            dom.XMLDesc(0)
    for net in conn.listAllNetworks(0):
        net.XMLDesc(0)
    for pool in conn.listAllStoragePools(0):
        pool.XMLDesc(0)
        for vol in pool.listAllVolumes(0):
            vol.XMLDesc(0)


def memory(conn: libvirt.virConnect, a: argparse.Namespace) -> None:
    """Redefine every VM with new memory; with --restart, restart it gracefully to use it."""

    def vm(c: libvirt.virConnect, i: int) -> None:
        dom = c.lookupByName(f"{a.prefix}vm-{i}")
        c.defineXML(domain_xml(i, a, memory_mib=a.memory, uuid=dom.UUIDString()))
        if a.restart:
            dom.shutdown()
            deadline = time.monotonic() + a.shutdown_timeout
            while dom.isActive() and time.monotonic() < deadline:
                time.sleep(0.25)
            stop(dom)
            dom.create()

    per_vm(a, conn, vm)


def stop(dom: libvirt.virDomain) -> None:
    """Destroy a domain unless it is off: one call, as iaasctl makes it. Asking first
    would be a round trip more, and racy: a guest may power off between the two."""
    try:
        dom.destroy()
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID:
            raise


def teardown(conn: libvirt.virConnect, a: argparse.Namespace) -> None:
    pool = conn.storagePoolLookupByName(f"{a.prefix}pool")

    def vm(c: libvirt.virConnect, i: int) -> None:
        dom = c.lookupByName(f"{a.prefix}vm-{i}")
        stop(dom)
        dom.undefine()
        c.storagePoolLookupByName(f"{a.prefix}pool").storageVolLookupByName(f"{a.prefix}vm-{i}-root").delete(0)

    per_vm(a, conn, vm)
    net = conn.networkLookupByName(f"{a.prefix}net")
    net.destroy()
    net.undefine()
    pool.destroy()
    pool.undefine()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=("converge", "noop", "memory", "teardown"))
    parser.add_argument("--uri", default="qemu:///system")
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--connection-each", action="store_true")
    parser.add_argument("--pool-dir")
    parser.add_argument("--base-image")
    parser.add_argument("--kernel")
    parser.add_argument("--initrd")
    parser.add_argument("--memory", type=int, default=128)
    parser.add_argument("--restart", action="store_true")
    parser.add_argument("--shutdown-timeout", type=float, default=60.0)
    args = parser.parse_args()
    conn = libvirt.open(args.uri)
    try:
        {"converge": converge, "noop": noop, "memory": memory, "teardown": teardown}[args.command](conn, args)
    finally:
        conn.close()


if __name__ == "__main__":
    main()
