"""Benchmarks 1-3 on a real libvirtd with TCG: converge from empty, no-op plan, memory
change (without and with restart), teardown — iaasctl against bench/baseline.py.

One cycle per side and repetition: converge, no-op (a few times), memory change,
memory change with restart, teardown. Sides alternate: iaasctl and each variant of
the baseline, in an order shuffled anew for each repetition (seeded: the same in
every run), so that no side always comes first, or always after the same other
side (until 2026-12-02 iaasctl always ran first, then the variants in turn).
"""

from __future__ import annotations

import functools
import io
import pstats
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from bench.common import REPO, START, Result, environment, iaasctl_cmd, timed

PREFIX = "bench-"
GUEST = Path("/var/lib/iaasctl-test/guest")
WORK = Path("/var/lib/iaasctl-bench")
NOOP_REPEATS = 10   # a no-op takes ~0.1 s and just-booted guests make the machine noisy: best of ten
# The guest powers off on ACPI once its init has loaded the button module and said
# so on its console: the restart benchmark waits for that (a fixed 6 s was too short
# for the guest build of 2026-12-01 22:41, and every side's restart became the
# forced-off timeout), at most GUEST_BOOT; a guest still not there is forced off after
# the same, short timeout on both sides.
CONSOLE_LOGS = Path("/var/log/libvirt/qemu")
GUEST_BOOT = 60.0
SHUTDOWN_TIMEOUT = 5


def manifests(n: int, *, memory: str, restart: str) -> str:
    docs = [f"""apiVersion: iaas/v1
kind: StoragePool
metadata: {{name: {PREFIX}pool}}
spec: {{path: {WORK / 'pool'}}}
""", f"""apiVersion: iaas/v1
kind: Network
metadata: {{name: {PREFIX}net}}
spec:
  mode: nat
  ipv4: {{cidr: 10.253.0.0/24, dhcp: {{start: 10.253.0.100, end: 10.253.0.250}}}}
"""]
    for i in range(n):
        docs.append(f"""apiVersion: iaas/v1
kind: Volume
metadata: {{name: {PREFIX}vm-{i}-root}}
spec: {{pool: {PREFIX}pool, size: 1GiB, source: {{path: {WORK / 'base.qcow2'}}}}}
""")
        docs.append(f"""apiVersion: iaas/v1
kind: VirtualMachine
metadata: {{name: {PREFIX}vm-{i}}}
spec:
  vcpus: 1
  memory: {memory}
  restartPolicy: {restart}
  boot: {{kernel: {GUEST / 'vmlinuz'}, initrd: {GUEST / 'initrd.gz'}, cmdline: console=ttyS0}}
  disks: [{{volume: {PREFIX}vm-{i}-root}}]
  networks: [{{network: {PREFIX}net}}]
""")
    return "---\n".join(docs)


def prepare() -> None:
    if not (GUEST / "vmlinuz").exists():
        subprocess.run(["bash", str(REPO / "tests/guest/build-guest.sh"), str(GUEST)], check=True)
    WORK.mkdir(parents=True, exist_ok=True)
    WORK.chmod(0o755)
    base = WORK / "base.qcow2"
    if not base.exists():
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "64M"], check=True)
        base.chmod(0o644)


def sweep() -> None:
    """Leave no bench- object behind, whatever a failed run left."""
    script = (
        "import libvirt\n"
        "libvirt.registerErrorHandler(lambda *a: None, None)\n"
        "c = libvirt.open('qemu:///system')\n"
        f"P = {PREFIX!r}\n"
        "for d in c.listAllDomains(0):\n"
        "    if d.name().startswith(P):\n"
        "        d.isActive() and d.destroy(); d.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)\n"
        "for p in c.listAllStoragePools(0):\n"
        "    if p.name().startswith(P):\n"
        "        p.isActive() or p.create(0); p.refresh(0)\n"
        "        [v.delete(0) for v in p.listAllVolumes(0)]; p.destroy(); p.undefine()\n"
        "for n in c.listAllNetworks(0):\n"
        "    if n.name().startswith(P):\n"
        "        n.isActive() and n.destroy(); n.undefine()\n"
    )
    subprocess.run([*START, "-c", script], env=environment(), check=True)
    for log in CONSOLE_LOGS.glob(f"{PREFIX}vm-*-console.log"):   # appended to: the next boot's alone
        log.unlink(missing_ok=True)


def wait_booted(n: int) -> None:
    """Until every guest's console says it has booted, at most GUEST_BOOT seconds."""
    deadline = time.monotonic() + GUEST_BOOT
    waiting = [CONSOLE_LOGS / f"{PREFIX}vm-{i}-console.log" for i in range(n)]
    while waiting and time.monotonic() < deadline:
        waiting = [log for log in waiting if not (log.exists() and b"IAASCTL-GUEST-BOOTED" in log.read_bytes())]
        if waiting:
            time.sleep(0.2)


def baseline_cmd(command: str, n: int, threads: int | tuple[int, str], *extra: str) -> list[str]:
    """`threads` is a count, or (count, "--connection-each")."""
    count, *each = threads if isinstance(threads, tuple) else (threads,)
    return [*START, str(REPO / "bench/baseline.py"), command, "--n", str(n), "--prefix", PREFIX,
            "--threads", str(count), *each, "--pool-dir", str(WORK / "pool"), "--base-image", str(WORK / "base.qcow2"),
            "--kernel", str(GUEST / "vmlinuz"), "--initrd", str(GUEST / "initrd.gz"), *extra]


def iaasctl_cycle(n: int, state: Path, specs: Path) -> dict[str, float]:
    env = environment()
    config = specs.parent / "config.yaml"
    config.write_text(f"shutdown_timeout: {SHUTDOWN_TIMEOUT}\n")
    base = ["--connect", "qemu:///system", "--state-dir", str(state), "--config", str(config)]
    out = {}
    (specs / "all.yaml").write_text(manifests(n, memory="128MiB", restart="manual"))
    out["converge"] = timed(iaasctl_cmd(*base, "apply", "-f", str(specs), "--yes"), env=env)
    out["noop"] = min(timed(iaasctl_cmd(*base, "plan", "-f", str(specs)), env=env) for _ in range(NOOP_REPEATS))
    (specs / "all.yaml").write_text(manifests(n, memory="160MiB", restart="manual"))
    out["memory"] = timed(iaasctl_cmd(*base, "apply", "-f", str(specs), "--yes"), env=env)
    wait_booted(n)
    (specs / "all.yaml").write_text(manifests(n, memory="192MiB", restart="auto"))
    out["memory+restart"] = timed(iaasctl_cmd(*base, "apply", "-f", str(specs), "--yes"), env=env)
    out["teardown"] = timed(iaasctl_cmd(*base, "delete", "-f", str(specs), "--yes"), env=env)
    return out


def baseline_cycle(n: int, threads: int | tuple[int, str]) -> dict[str, float]:
    out = {"converge": timed(baseline_cmd("converge", n, threads))}
    out["noop"] = min(timed(baseline_cmd("noop", n, threads)) for _ in range(NOOP_REPEATS))
    out["memory"] = timed(baseline_cmd("memory", n, threads, "--memory", "160"))
    wait_booted(n)
    out["memory+restart"] = timed(baseline_cmd("memory", n, threads, "--memory", "192", "--restart",
                                               "--shutdown-timeout", str(SHUTDOWN_TIMEOUT)))
    out["teardown"] = timed(baseline_cmd("teardown", n, threads))
    return out


def _top_imports(stderr: str, count: int = 15) -> str:
    """`-X importtime` output as the time each top-level package costs (its modules'
    own time, summed), then our costliest modules."""
    by_package: dict[str, int] = {}
    ours = []
    for line in stderr.splitlines():
        if line.startswith("import time:") and "self [us]" not in line:
            own, _, name = line[len("import time:"):].split("|")
            name = name.strip()
            package = {"libvirtmod": "libvirt"}.get(name.split(".")[0], name.split(".")[0])
            by_package[package] = by_package.get(package, 0) + int(own)
            if package == "controller":
                ours.append((int(own), name))
    rows = sorted(((us, name) for name, us in by_package.items()), reverse=True)
    lines = [f"all imports: {sum(by_package.values()) / 1000:.1f} ms (as -X importtime counts them)", "by package:"]
    lines += [f"{us / 1000:7.1f} ms  {name}" for us, name in rows[:count]]
    lines += ["our costliest modules (own time):"]
    lines += [f"{us / 1000:7.1f} ms  {name}" for us, name in sorted(ours, reverse=True)[:8]]
    return "\n".join(lines)


def profiles(n: int) -> dict[str, str]:
    """Where a whole iaasctl process spends its time: a cold `apply` of n VMs (fresh
    state directory, as in the converge benchmark) and a no-op `plan`, under cProfile
    (the executor's threads show as the main thread waiting), and the imports of that
    `plan`."""
    prepare()
    sweep()
    tmp = Path(tempfile.mkdtemp(prefix="iaasctl-bench-profile-"))
    env = environment()
    base = ["--connect", "qemu:///system", "--state-dir", str(tmp / "state")]
    (tmp / "specs").mkdir()
    (tmp / "specs" / "all.yaml").write_text(manifests(n, memory="128MiB", restart="manual"))
    out: dict[str, str] = {}
    plan = ["plan", "-f", str(tmp / "specs")]
    try:
        for title, command in ((f"cold `iaasctl apply`, {n} VM(s)", ["apply", "-f", str(tmp / "specs"), "--yes"]),
                               (f"no-op `iaasctl plan`, {n} VM(s)", plan)):
            stats = tmp / "profile.out"
            # main(), not the command's run(): that ends the process before cProfile writes
            subprocess.run([*START, "-c", "import cProfile, sys; from controller.cli import main; "
                            f"cProfile.run('main(sys.argv[1:])', {str(stats)!r})", *base, *command],
                           env=env, cwd=REPO, capture_output=True, check=True)
            text = io.StringIO()
            pstats.Stats(str(stats), stream=text).sort_stats("cumulative").print_stats(25)
            out[title] = text.getvalue()
        done = subprocess.run([*START, "-X", "importtime", "-m", "controller", *base, *plan],
                              env=env, cwd=REPO, capture_output=True, text=True, check=False)
        out[f"imports of a no-op `iaasctl plan`, {n} VM(s)"] = _top_imports(done.stderr)
    finally:
        sweep()
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def baselines(n: int) -> list[tuple[str, int | tuple[int, str]]]:
    """The floor is the fastest of these plain scripts. Like iaasctl's workers, the
    last two give each thread a connection of its own; the last is as wide as a
    script can usefully go, a thread per VM (iaasctl's default parallelism, 32, is
    as wide for every size here): stopping a guest is mostly waiting, for libvirt's
    200 ms poll and for the guest, and waits do not need a core each.

    A pool wider than n runs as a pool of n, and a pool of one is the sequential
    script on another thread: such variants are left out, being the same program as
    one kept. Each duplicate would only lower the floor by the noise, the floor
    being the fastest median (at N=1 the four variants were one program twice over,
    and the least of four medians of one program is ~1 standard error below its
    median)."""
    wanted = [(1, False), (4, False), (8, False), (8, True)] + ([(n, True)] if n > 8 else [])
    variants: dict[tuple[int, bool], tuple[str, int | tuple[int, str]]] = {}
    for threads, each in wanted:
        width = min(threads, n)
        if (width, each) not in variants:
            variants[(width, each)] = _variant(width, each)
    return list(variants.values())


def _variant(width: int, each: bool) -> tuple[str, int | tuple[int, str]]:
    if each:
        plural = "s" if width > 1 else ""
        return f"{width} thread{plural}, {width} connection{plural}", (width, "--connection-each")
    return ("sequential", 1) if width == 1 else (f"{width} threads", width)


TARGETS = {"converge": 1.1, "teardown": 1.1, "noop": 2.0, "memory": None, "memory+restart": None}


def _iaasctl_sample(n: int) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="iaasctl-bench-"))
    try:
        (tmp / "specs").mkdir()
        return iaasctl_cycle(n, tmp / "state", tmp / "specs")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(reps: dict[int, int]) -> Iterator[Result]:
    """reps: the repetitions of each size, by VM count. The results of each size as
    soon as it is done: a run that fails later keeps them."""
    prepare()
    sweep()
    for n, count in reps.items():
        by_op = {op: Result(f"{op}", n, target=TARGETS[op] if op != "noop" or n == 10 else None)
                 for op in TARGETS}
        sides: list[tuple[str | None, Callable[[], dict[str, float]]]] = [   # None: iaasctl
            (None, functools.partial(_iaasctl_sample, n)),
            *((variant, functools.partial(baseline_cycle, n, threads)) for variant, threads in baselines(n))]
        for rep in range(count):
            order = sides[:]   # a side's place in a repetition, and the side before it, vary
            random.Random(rep).shuffle(order)
            for variant, cycle in order:
                try:
                    samples = cycle()
                finally:
                    sweep()
                for op, seconds in samples.items():
                    result = by_op[op]
                    (result.iaasctl if variant is None else result.baselines.setdefault(variant, [])).append(seconds)
        yield from by_op.values()
