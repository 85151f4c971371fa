"""`iaasctl run` on a real host: out-of-band changes made with virsh are put back,
unmanaged domains are left alone, and a killed libvirtd is survived."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import libvirt
import pytest

from tests.realhost.conftest import GUEST, PREFIX, URI, Host, nat_network, network_active, terminate, wait_for

REPO = Path(__file__).resolve().parents[2]
VM = f"{PREFIX}dvm"
NET = f"{PREFIX}dnet"

NETWORK = nat_network(NET, 252)


def vm(memory: str = "128MiB") -> str:
    return f"""\
apiVersion: iaas/v1
kind: VirtualMachine
metadata:
  name: {VM}
spec:
  vcpus: 1
  memory: {memory}
  restartPolicy: auto
  boot:
    kernel: {GUEST / 'vmlinuz'}
    initrd: {GUEST / 'initrd.gz'}
    cmdline: console=ttyS0
  networks:
    - network: {NET}
"""


def virsh(*args: str, check: bool = True) -> str:
    done = subprocess.run(["virsh", "-c", URI, *args], capture_output=True, text=True, timeout=60, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"virsh {' '.join(args)}: {done.stderr}")
    return done.stdout


def domain(name: str) -> tuple[bool, bool, int]:
    """(defined, running, persistent memory KiB) of a domain, without keeping a connection.

    Running means started and settled: libvirt calls a domain active from the moment its
    QEMU process exists, and a `virsh destroy` sent while the start job is still running
    makes that start fail instead of stopping a running VM."""
    conn = libvirt.open(URI)
    try:
        dom = conn.lookupByName(name)
        config = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        memory = int(config.split("<memory unit='KiB'>")[1].split("<")[0])
        running = (dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
                   and dom.controlInfo()[0] == libvirt.VIR_DOMAIN_CONTROL_OK)
        return True, running, memory
    except libvirt.libvirtError:
        return False, False, 0
    finally:
        conn.close()


@dataclass
class Daemon:
    process: subprocess.Popen[str]
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def daemon(host: Host, tmp_path: Path) -> Iterator[Daemon]:
    host.write("network.yaml", NETWORK)
    host.write("vm.yaml", vm())
    config = tmp_path / "config.yaml"
    config.write_text("debounce: 0.2\ndelete_grace: 3\nresync_interval: 5\nshutdown_timeout: 5\n"
                      "backoff_base: 0.5\nbackoff_max: 4\n")
    log = tmp_path / "daemon.log"
    env = dict(os.environ, IAASCTL_DOMAIN_TYPE="qemu")
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "controller", "--connect", URI, "--state-dir", str(host.state),
             "--config", str(config), "run", "-f", str(host.specs)],
            stdout=out, stderr=subprocess.STDOUT, text=True, env=env, stdin=subprocess.DEVNULL)
    running = Daemon(process, log)
    try:
        wait_for("the VM running under the daemon", lambda: domain(VM)[1], timeout=60)
        yield running
    finally:
        terminate(process, "the daemon", log)


def test_out_of_band_changes_are_put_back(daemon: Daemon, host: Host) -> None:
    # virsh destroy: started again, from the lifecycle event (timing is a benchmark's
    # business; here it only has to happen)
    virsh("destroy", VM)
    wait_for("the destroyed VM running again", lambda: domain(VM)[1], timeout=30)

    # virsh undefine: defined again
    virsh("destroy", VM)
    virsh("undefine", VM)
    wait_for("the undefined VM defined and running again", lambda: domain(VM)[:2] == (True, True), timeout=30)

    # a stopped network: started again
    virsh("net-destroy", NET)
    wait_for("the network active again", lambda: network_active(NET), timeout=30)

    # virsh setmaxmem --config: reverted to the manifest's 128MiB. libvirt sends no
    # event for a config-only change, so this is the periodic resync's catch.
    wait_for("the VM defined again", lambda: virsh("dominfo", VM).count("Persistent:     yes"), timeout=30)
    virsh("setmaxmem", VM, "262144", "--config")
    assert domain(VM)[2] == 256 * 1024
    wait_for("the memory reverted to 128MiB", lambda: domain(VM)[2] == 128 * 1024, timeout=30)

    # each recorded as drift (the event is written once the pass has looked again)
    events = wait_for("the memory drift in `iaasctl events`", lambda: (
        lambda out: out if "spec.memory: 256MiB -> 128MiB" in out else None)(
        host.iaasctl("events", "vm", VM, check=0).stdout), timeout=30)
    # destroy, undefine (seen as "gone", or as started-then-transient: one or two
    # events, depending on who wins the race with virsh) and setmaxmem
    assert events.count("Drifted") >= 3, events


def test_unmanaged_domains_are_left_alone(daemon: Daemon, host: Host) -> None:
    name = f"{PREFIX}dunmanaged"
    conn = libvirt.open(URI)
    try:
        conn.defineXML(f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory>"
                       f"<os><type>hvm</type><kernel>{GUEST / 'vmlinuz'}</kernel>"
                       f"<initrd>{GUEST / 'initrd.gz'}</initrd></os></domain>").create()
    finally:
        conn.close()
    virsh("destroy", name)
    virsh("destroy", VM)                    # a pass follows this one...
    wait_for("the managed VM running again", lambda: domain(VM)[1], timeout=30)
    assert domain(name)[:2] == (True, False), "...which must not start the unmanaged one"


def test_a_second_daemon_is_refused(daemon: Daemon, host: Host) -> None:
    second = subprocess.run(
        [sys.executable, "-m", "controller", "--connect", URI, "--state-dir", str(host.state),
         "run", "-f", str(host.specs)], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert second.returncode == 1
    assert f"(pid {daemon.process.pid})" in second.stderr


def libvirtd_pid() -> int | None:
    try:
        pid = int(Path("/run/libvirtd.pid").read_text().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def restart_libvirtd() -> None:
    """As setup-host.sh starts it (under a subreaper without systemd, so that later tests'
    destroys are not slowed down by an init that reaps QEMU late)."""
    subprocess.run(["bash", str(REPO / "scripts" / "start-libvirt.sh")], check=True, stdin=subprocess.DEVNULL)
    wait_for("libvirtd answering again", lambda: subprocess.run(
        ["virsh", "-c", URI, "version"], capture_output=True, check=False).returncode == 0, timeout=30)


def test_libvirtd_killed_mid_reconcile_is_survived(daemon: Daemon, host: Host) -> None:
    pid = libvirtd_pid()
    if pid is None:
        pytest.fail("the real-host tier needs libvirtd's pid file (/run/libvirtd.pid) to kill it")
    host.write("vm.yaml", vm(memory="160MiB"))      # a change the daemon starts applying...
    time.sleep(0.3)
    os.kill(pid, signal.SIGKILL)                      # ...when libvirtd dies
    try:
        wait_for("the daemon to notice", lambda: "disconnected" in daemon.text(), timeout=30)
    finally:
        time.sleep(1.0)
        restart_libvirtd()
    wait_for("the daemon to reconnect", lambda: "reconnected" in daemon.text(), timeout=60)
    wait_for("the change applied after reconnecting", lambda: domain(VM)[2] == 160 * 1024, timeout=60)
    wait_for("the VM running", lambda: domain(VM)[1], timeout=60)
    # events flow again (the callbacks were registered anew): a destroy is healed
    virsh("destroy", VM)
    wait_for("the VM running again after a destroy", lambda: domain(VM)[1], timeout=30)
    # nothing duplicated: one domain, one network of ours
    names = virsh("list", "--all", "--name").split()
    assert [n for n in names if n.startswith(PREFIX)] == [VM]
    assert [n for n in virsh("net-list", "--all", "--name").split() if n.startswith(PREFIX)] == [NET]
    assert daemon.process.poll() is None, daemon.text()
