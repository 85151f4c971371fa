"""Tier 3: a real libvirtd (qemu:///system), dnsmasq-backed networks, real qcow2
volumes and a tiny guest that boots under TCG.

Every object is named with PREFIX and swept before and after each test, even when
the test fails. Under CI=true nothing here skips: a missing libvirtd or guest
image fails the run.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt
import pytest

from tests.conftest import under_ci
from tests.conftest import wait_for as shared_wait_for

URI = "qemu:///system"
PREFIX = "iaasctl-t-"
WORK = Path("/var/lib/iaasctl-test")
GUEST = Path(os.environ.get("IAASCTL_GUEST_DIR", str(WORK / "guest")))

pytestmark = pytest.mark.realhost


def _unavailable(reason: str) -> None:
    if under_ci():
        pytest.fail(f"real-host tier cannot run under CI: {reason}")
    pytest.skip(reason)


def sweep() -> None:
    """Remove every PREFIX object, whatever state a failed test left it in. An object
    that vanishes meanwhile is fine: the sweep only has to leave none behind."""
    conn = libvirt.open(URI)
    try:
        for dom in conn.listAllDomains(0):
            if dom.name().startswith(PREFIX):
                with _gone_is_fine():
                    if dom.isActive():
                        dom.destroy()
                    dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)
        for pool in conn.listAllStoragePools(0):
            if pool.name().startswith(PREFIX):
                with _gone_is_fine():
                    if not pool.isActive():
                        pool.create(0)
                    pool.refresh(0)
                    for vol in pool.listAllVolumes(0):
                        vol.delete(0)
                    pool.destroy()
                    pool.undefine()
        for net in conn.listAllNetworks(0):
            if net.name().startswith(PREFIX):
                with _gone_is_fine():
                    if net.isActive():
                        net.destroy()
                    net.undefine()
    finally:
        conn.close()


_GONE = (libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_NO_NETWORK, libvirt.VIR_ERR_NO_STORAGE_POOL,
         libvirt.VIR_ERR_NO_STORAGE_VOL, libvirt.VIR_ERR_OPERATION_INVALID)


@contextmanager
def _gone_is_fine() -> Iterator[None]:
    try:
        yield
    except libvirt.libvirtError as exc:
        if exc.get_error_code() not in _GONE:
            raise


@dataclass
class Host:
    """Runs the real `iaasctl` command against the real host, with a private state dir."""

    specs: Path
    state: Path

    def iaasctl(self, *args: str, check: int | None = None) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, IAASCTL_DOMAIN_TYPE="qemu")
        cmd = [sys.executable, "-m", "controller", "--connect", URI, "--state-dir", str(self.state), *args]
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, stdin=subprocess.DEVNULL)
        if check is not None:
            assert done.returncode == check, (
                f"{' '.join(args)}: exit {done.returncode}, wanted {check}\n"
                f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
            )
        return done

    def write(self, name: str, text: str) -> None:
        (self.specs / name).write_text(text)

    def remove(self, name: str) -> None:
        (self.specs / name).unlink()

    def get(self, kind: str) -> list[dict[str, Any]]:
        return json.loads(self.iaasctl("get", kind, "-o", "json", check=0).stdout)


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    try:
        libvirt.open(URI).close()
    except libvirt.libvirtError as exc:
        _unavailable(f"no libvirtd at {URI}: {exc}")
    for name in ("vmlinuz", "initrd.gz"):
        if not (GUEST / name).is_file():
            _unavailable(f"test guest missing: {GUEST / name} (run tests/guest/build-guest.sh)")
    # One real-host test at a time on this machine (two checkouts' suites would sweep
    # each other's objects): an flock, released by the kernel if a run dies.
    WORK.mkdir(parents=True, exist_ok=True)
    with open(WORK / ".realhost.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        sweep()
        specs = tmp_path / "specs"
        specs.mkdir()
        try:
            yield Host(specs=specs, state=tmp_path / "state")
        finally:
            sweep()


def wait_for(what: str, probe: Callable[[], Any], *, timeout: float = 120.0, every: float = 1.0) -> Any:
    """The shared poller, with the real host's slower defaults."""
    return shared_wait_for(what, probe, timeout=timeout, every=every)


def nat_network(name: str, third_octet: int) -> str:
    """A NAT network manifest on 10.<third_octet>.0.0/24 with a DHCP range."""
    return f"""\
apiVersion: iaas/v1
kind: Network
metadata:
  name: {name}
spec:
  mode: nat
  ipv4:
    cidr: 10.{third_octet}.0.0/24
    dhcp:
      start: 10.{third_octet}.0.100
      end: 10.{third_octet}.0.200
"""


def network_active(name: str) -> bool:
    conn = libvirt.open(URI)
    try:
        return bool(conn.networkLookupByName(name).isActive())
    except libvirt.libvirtError:
        return False
    finally:
        conn.close()


def terminate(process: subprocess.Popen[str], what: str, log: Path) -> None:
    """SIGTERM a long-running iaasctl (`run`, `serve`) and insist it exits 0, as both
    promise; its log is in the message when it does not."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    assert code == 0, f"{what} must exit 0 on SIGTERM\n{log.read_text(errors='replace')}"


def qemu_img_info(path: str) -> dict[str, Any]:
    out = subprocess.run(["qemu-img", "info", "-U", "--output", "json", path], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout)
