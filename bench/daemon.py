"""Benchmark 5: the daemon on a real host with N managed VMs.

- save -> reconcile start: a manifest edit, to the start of the pass that reads it
  (the daemon's debug log line, timestamped by the same clock);
- out-of-band destroy -> running again, against a plain libvirt-python event
  handler that restarts the domain on its STOPPED event (the floor);
- idle CPU (share of one core) and memory (RSS) of the daemon over a quiet period.
"""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import libvirt

from bench import lifecycle
from bench.common import START, environment, iaasctl_cmd

libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
TIMEOUT = 60.0
SETTLE = 2.0      # seconds between two destroy samples

FLOOR_HANDLER = """
import libvirt, sys, threading
libvirt.registerErrorHandler(lambda *a: None, None)
libvirt.virEventRegisterDefaultImpl()
conn = libvirt.open('qemu:///system')
def on_event(c, dom, event, detail, opaque):
    if event == libvirt.VIR_DOMAIN_EVENT_STOPPED and dom.name().startswith(sys.argv[1]):
        threading.Thread(target=dom.create).start()
conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, on_event, None)
print('ready', flush=True)
while True:
    libvirt.virEventRunDefaultImpl()
"""


def _running(conn: libvirt.virConnect, name: str) -> bool:
    try:
        return bool(conn.lookupByName(name).isActive())
    except libvirt.libvirtError:
        return False


def _destroy_to_running(conn: libvirt.virConnect, name: str) -> float:
    dom = conn.lookupByName(name)
    # A guest counts as running as soon as QEMU is up, but libvirt's start job goes on;
    # on a host this busy it can outlast SETTLE, and a destroy then fails that start.
    waited = time.perf_counter()
    while dom.controlInfo()[0] != libvirt.VIR_DOMAIN_CONTROL_OK:
        if time.perf_counter() - waited > TIMEOUT:
            raise RuntimeError(f"{name}: libvirt still busy with it after {TIMEOUT:.0f} s")
        time.sleep(0.05)
    started = time.perf_counter()
    dom.destroy()
    while not _running(conn, name):
        if time.perf_counter() - started > TIMEOUT:
            raise RuntimeError(f"{name} was not started again within {TIMEOUT:.0f} s "
                               f"(state {conn.lookupByName(name).state(0)})")
        time.sleep(0.002)
    return time.perf_counter() - started


def _floor_sample(conn: libvirt.virConnect, name: str, daemon: subprocess.Popen[bytes]) -> float:
    """One destroy healed by the floor's handler, with iaasctl paused meanwhile."""
    daemon.send_signal(signal.SIGSTOP)
    handler = subprocess.Popen([*START, "-c", FLOOR_HANDLER, lifecycle.PREFIX], stdout=subprocess.PIPE, text=True,
                               env=environment())
    try:
        assert handler.stdout is not None and handler.stdout.readline().strip() == "ready"
        return _destroy_to_running(conn, name)
    finally:
        handler.kill()
        handler.wait()
        daemon.send_signal(signal.SIGCONT)


def _destroy_samples(conn: libvirt.virConnect, names: list[str], repeats: int,
                     daemon: subprocess.Popen[bytes]) -> tuple[list[float], list[float]]:
    """Out-of-band destroys healed by iaasctl and by the floor, alternately (the host gets
    quieter as the guests finish booting, so taking one side's samples first would
    favour the other), each on a VM of its own. Each sample starts once the previous
    one has settled (the daemon's pass after its own start, the guest's first boot
    steps), so that it measures one event's handling and not the tail of the previous one."""
    heal, floor = [], []
    for i in range(repeats):
        heal.append(_destroy_to_running(conn, names[(2 * i) % len(names)]))
        time.sleep(SETTLE)
        floor.append(_floor_sample(conn, names[(2 * i + 1) % len(names)], daemon))
        time.sleep(SETTLE)
    return heal, floor


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _log_time(line: str) -> float:
    stamp = " ".join(line.split()[:2])            # "2026-11-26 10:39:10,253"
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def run(n: int, idle_seconds: float, repeats: int, *, log_copy: Path | None = None) -> dict[str, Any]:
    """The figures; the daemon's debug log is copied to `log_copy`, to explain an outlier."""
    lifecycle.prepare()
    lifecycle.sweep()
    tmp = Path(tempfile.mkdtemp(prefix="iaasctl-bench-daemon-"))
    specs = tmp / "specs"
    specs.mkdir()
    (specs / "all.yaml").write_text(lifecycle.manifests(n, memory="128MiB", restart="manual"))
    log = tmp / "daemon.log"
    out = open(log, "w")  # noqa: SIM115 - the daemon writes to it for the whole benchmark
    daemon = subprocess.Popen(iaasctl_cmd("--connect", "qemu:///system", "--state-dir", str(tmp / "state"),
                                          "run", "-v", "-f", str(specs)),
                              stdout=out, stderr=subprocess.STDOUT, env=environment(), stdin=subprocess.DEVNULL)
    conn = libvirt.open("qemu:///system")
    result: dict[str, Any] = {"vms": n}
    try:
        names = [f"{lifecycle.PREFIX}vm-{i}" for i in range(n)]
        deadline = time.monotonic() + 300
        while not all(_running(conn, name) for name in names):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the daemon did not converge {n} VMs in 300 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        time.sleep(3)                                   # let the guests finish booting

        latencies = []
        for i in range(repeats):
            memory = "160MiB" if i % 2 == 0 else "128MiB"
            text = lifecycle.manifests(n, memory="128MiB", restart="manual").replace(
                f"{lifecycle.PREFIX}vm-0}}\nspec:\n  vcpus: 1\n  memory: 128MiB",
                f"{lifecycle.PREFIX}vm-0}}\nspec:\n  vcpus: 1\n  memory: {memory}")
            seen = len(log.read_text().splitlines())
            saved = time.time()
            (specs / "all.yaml").write_text(text)
            started = None
            while started is None and time.time() - saved < 30:
                lines = log.read_text().splitlines()[seen:]
                starts = [_log_time(line) for line in lines if "DEBUG pass (" in line and "manifest" in line]
                started = starts[0] if starts else None
                time.sleep(0.01)
            if started is None:
                raise RuntimeError("no pass started within 30 s of the save")
            latencies.append(started - saved)
            time.sleep(2)
        result["save_to_pass_start_s"] = {"median": statistics.median(latencies), "samples": latencies,
                                          "target_s": 0.5}

        heal, floor = _destroy_samples(conn, names, repeats, daemon)
        result["destroy_to_running_s"] = {"median": statistics.median(heal), "samples": heal,
                                          "floor_median": statistics.median(floor), "floor_samples": floor,
                                          "ratio": statistics.median(heal) / statistics.median(floor),
                                          "target_s": 2.0}

        time.sleep(5)                                   # the passes caused by the above settle
        cpu0, wall0 = _cpu_seconds(daemon.pid), time.monotonic()
        time.sleep(idle_seconds)
        cpu = (_cpu_seconds(daemon.pid) - cpu0) / (time.monotonic() - wall0)
        result["idle"] = {"seconds": idle_seconds, "cpu_share_of_one_core": cpu, "rss_mib": _rss_mib(daemon.pid),
                          "target_cpu": 0.01, "target_rss_mib": 60}
    finally:
        conn.close()
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)
        out.close()
        subprocess.run(iaasctl_cmd("--connect", "qemu:///system", "--state-dir", str(tmp / "state"),
                                   "delete", "-f", str(specs), "--yes"), env=environment(), check=False,
                       capture_output=True)
        lifecycle.sweep()
        if log_copy is not None:
            log_copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(log, log_copy)
        shutil.rmtree(tmp, ignore_errors=True)
    return result
