"""Run the benchmarks and write bench/results/report.md and report.json.

    python -m bench.run                     # everything (real host: root, libvirtd, ~40 min)
    python -m bench.run --only scale        # the reconcile loop on the test driver only
    python -m bench.run --quick             # smaller sizes and fewer repetitions
    python -m bench.run --only lifecycle --sizes 10 --reps 3   # one size of benchmarks 1-3
    python -m bench.run --reps 15,5,3       # repetitions per size: more where a cycle is short

Figures are reported, never asserted: these machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench import common


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run")
    parser.add_argument("--only", choices=("lifecycle", "scale", "daemon"), action="append")
    parser.add_argument("--quick", action="store_true", help="small sizes, one repetition: a smoke run")
    parser.add_argument("--out", type=Path, default=common.REPO / "bench" / "results")
    parser.add_argument("--reps", type=lambda text: [int(n) for n in text.split(",")], default=[3],
                        help="repetitions of each lifecycle cycle: one count, or one per size")
    parser.add_argument("--reps-largest", type=int, help="repetitions for the largest size (slow under TCG)")
    parser.add_argument("--sizes", type=lambda text: [int(n) for n in text.split(",")],
                        help="VM counts of the lifecycle benchmarks (default 1,10,30)")
    args = parser.parse_args(argv)
    chosen = set(args.only or ("lifecycle", "scale", "daemon"))
    common.compiled()
    sections: dict = {"machine": common.machine(), "comparisons": [], "profiles": {}}
    # The report is written again as each part ends: a full run takes over an hour, and
    # a failure late in it (one lost the run of 2026-12-01 18:39) keeps what came before.
    if "scale" in chosen:
        from bench import scale

        sizes = [50, 100, 200] if args.quick else [100, 1000, 5000]
        sections["scale"], sections["profiles"] = scale.run(sizes)
        print(f"scale: {sections['scale']}", file=sys.stderr)
        common.write_report(args.out, sections)
    if "lifecycle" in chosen:
        from bench import lifecycle

        sizes = [1, 2] if args.quick else args.sizes or [1, 10, 30]
        reps = [1] * len(sizes) if args.quick else args.reps * len(sizes) if len(args.reps) == 1 else args.reps
        if len(reps) != len(sizes):
            parser.error(f"--reps: {len(reps)} counts for {len(sizes)} sizes")
        if args.reps_largest:
            reps[sizes.index(max(sizes))] = args.reps_largest
        sections["profiles"].update(lifecycle.profiles(1))   # first: a minute, not the hour after it
        for result in lifecycle.run(dict(zip(sizes, reps, strict=True))):
            sections["comparisons"].append(result.summary())
            print(f"{result.name} N={result.size}: {result.ratio:.2f}x {result.summary()}", file=sys.stderr)
            common.write_report(args.out, sections)
    if "daemon" in chosen:
        from bench import daemon

        n, idle, repeats = (2, 5.0, 2) if args.quick else (30, 60.0, 5)
        sections["daemon"] = daemon.run(n, idle, repeats, log_copy=args.out / "daemon.log")
        print(f"daemon: {sections['daemon']}", file=sys.stderr)
    common.write_report(args.out, sections)
    print(f"wrote {args.out / 'report.md'} and {args.out / 'report.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
