"""Where a command's time goes between libvirt calls: each call's start and length,
by thread, for iaasctl and the floor alike.

    python -m bench.trace --n 10 --pairs 6      # teardown, each right after its converge
    python -m bench.trace --n 1 --op converge
    python -m bench.trace --n 1 --op converge --phases   # and iaasctl's own steps

Each side runs as in the benchmark (`python -S`, this checkout first), with
bench/tracehook.py's `install` run first: it wraps libvirt's classes as libvirt is
imported (not before: the import's own time stays where it was), and writes the
calls when the process exits.
The sides alternate in a seeded shuffled order, as in bench/lifecycle.py. Printed
per sample: the first change, the last call's end and the process's end, in ms from
the process's start. Rounds 14 and 15 of docs/performance.md were traced this way.
With `--phases`, iaasctl's side also records when its pipeline's modules finished
importing and how long its own steps took (tracehook.PHASES: the start, the session,
observe, plan, execute, each shared commit), printed under each of its samples.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

READS = ("list", "lookup", "XMLDesc", "getAllDomainStats", "name", "UUIDString", "isAlive", "isActive",
         "info", "getInfo", "getCapabilities", "setKeepAlive", "autostart", "state", "close", "open")


class Call(NamedTuple):
    start_ms: float
    length_ms: float
    thread: str
    name: str

    @property
    def ends_ms(self) -> float:
        return self.start_ms + self.length_ms

    @property
    def ours(self) -> bool:
        """One of our functions or imports (`--phases`), not a libvirt call."""
        return self.name.startswith("@")

    @property
    def changes(self) -> bool:
        if self.ours:
            return False
        method = self.name.rsplit(".", 1)[-1]
        return not (method.startswith(READS) or "Lookup" in method or "Event" in method)


def read(path: Path) -> list[tuple[list[Call], float]]:
    """Each process's calls in a trace file, with the process's end (ms)."""
    processes: list[tuple[list[Call], float]] = []
    calls: list[Call] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        fields = line.split("\t")
        if fields[0] == "END":
            processes.append((calls, float(fields[1])))
            calls = []
        else:
            calls.append(Call(float(fields[0]), float(fields[1]), fields[2], fields[3]))
    return processes


def summary(calls: Sequence[Call], end_ms: float) -> str:
    changes = [c for c in calls if c.changes]
    libvirt = [c for c in calls if not c.ours]
    first = f"{changes[0].start_ms:.0f}" if changes else "-"
    last = f"{max(c.ends_ms for c in libvirt):.0f}" if libvirt else "-"
    return f"first change {first} ms, last call ends {last} ms, process ends {end_ms:.0f} ms"


def phases(calls: Sequence[Call]) -> str:
    """Our recorded functions and imports on the main thread, in order, with the
    commits (fsyncs) of every thread: where a command's time goes between its calls."""
    shown = [c for c in calls if c.ours and (c.thread == "MainThread" or "_commit" in c.name)]
    return "; ".join(f"{c.name[1:].replace('controller.', '')} {c.start_ms:.0f}"
                     + (f"+{c.length_ms:.1f}" if c.length_ms else "") for c in shown)


def traced(command: Sequence[str], out: Path, *, with_phases: bool = False) -> list[str]:
    """A benchmark command line (`python -S -c CODE ...` or `python -S SCRIPT ...`),
    tracing into `out`; `with_phases`: our functions too (see tracehook.PHASES)."""
    python, flag, first, *rest = command
    setup = f"import bench.tracehook; bench.tracehook.install({str(out)!r}, phases={with_phases}); "
    if first == "-c":
        code, *rest = rest
        return [python, flag, "-c", setup + code, *rest]
    return [python, flag, "-c", setup + f"import runpy, sys; sys.argv[0] = {first!r}; "
            f"runpy.run_path({first!r}, run_name='__main__')", *rest]


def main(argv: Sequence[str] | None = None) -> int:
    from bench import lifecycle
    from bench.common import environment, iaasctl_cmd, timed

    parser = argparse.ArgumentParser(prog="python -m bench.trace")
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--op", choices=("teardown", "converge"), default="teardown")
    parser.add_argument("--out", type=Path, default=lifecycle.REPO / "bench" / "results" / "traces")
    parser.add_argument("--phases", action="store_true",
                        help="also time iaasctl's own steps (imports, observe, plan, commits) and print them")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    env = environment()
    lifecycle.prepare()
    lifecycle.sweep()
    threads = (args.n, "--connection-each")
    seconds: dict[str, list[float]] = {"iaasctl": [], "floor": []}

    def iaasctl_side() -> float:
        tmp = Path(tempfile.mkdtemp(prefix="iaasctl-trace-"))
        try:
            (tmp / "specs").mkdir()
            (tmp / "specs" / "all.yaml").write_text(lifecycle.manifests(args.n, memory="128MiB", restart="manual"))
            base = ["--connect", "qemu:///system", "--state-dir", str(tmp / "state")]
            apply = iaasctl_cmd(*base, "apply", "-f", str(tmp / "specs"), "--yes")
            delete = iaasctl_cmd(*base, "delete", "-f", str(tmp / "specs"), "--yes")
            if args.op == "teardown":
                timed(apply, env=env)
            return timed(traced(apply if args.op == "converge" else delete, args.out / "iaasctl.trace",
                                with_phases=args.phases), env=env)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def floor_side() -> float:
        converge = lifecycle.baseline_cmd("converge", args.n, threads)
        if args.op == "converge":
            return timed(traced(converge, args.out / "floor.trace"))
        timed(converge)
        return timed(traced(lifecycle.baseline_cmd("teardown", args.n, threads), args.out / "floor.trace"))

    for trace in ("iaasctl.trace", "floor.trace"):
        (args.out / trace).unlink(missing_ok=True)
    for pair in range(args.pairs):
        sides = [("iaasctl", iaasctl_side), ("floor", floor_side)]
        random.Random(pair).shuffle(sides)
        for name, side in sides:
            try:
                seconds[name].append(side())
            finally:
                lifecycle.sweep()
            calls, end = read(args.out / f"{name}.trace")[-1]
            print(f"pair {pair} {name:8} {seconds[name][-1]:.3f} s: {summary(calls, end)}", flush=True)
            if args.phases and name == "iaasctl":
                print(f"  phases (ms from the start, +length): {phases(calls)}", flush=True)
    ours, floor = (statistics.median(seconds[name]) for name in ("iaasctl", "floor"))
    variant = lifecycle._variant(args.n, True)[0]   # the benchmark's name for this floor
    print(f"{args.op} N={args.n}: iaasctl {ours:.3f} s, floor {floor:.3f} s ({variant}), {ours / floor:.2f}x; "
          f"traces in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
