"""Two checkouts of iaasctl against each other, where a change is smaller than what
two full runs resolve: medians of the same code move by up to ±8% between runs here.

    python -m bench.ab /work/before --n 1 --pairs 10     # this checkout against /work/before

Each pair converges N VMs from empty (`apply`) and tears them down (`delete`) with
each checkout, in an order shuffled anew for each pair (seeded), each side as the
benchmark runs iaasctl (bench/common.py: `python -S`, its own checkout first on the
path, byte-compiled first). No floor: the ratio is this checkout over the other, with
the interval of bench/common.py's Result, and the median of the pairs' own ratios.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import tempfile
from pathlib import Path

from bench.common import REPO, Result, compiled, environment, iaasctl_cmd, timed
from bench.lifecycle import SHUTDOWN_TIMEOUT, manifests, prepare, sweep


def cycle(repo: Path, n: int) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="iaasctl-bench-ab-"))
    try:
        (tmp / "specs").mkdir()
        (tmp / "config.yaml").write_text(f"shutdown_timeout: {SHUTDOWN_TIMEOUT}\n")
        (tmp / "specs" / "all.yaml").write_text(manifests(n, memory="128MiB", restart="manual"))
        base = ["--connect", "qemu:///system", "--state-dir", str(tmp / "state"), "--config", str(tmp / "config.yaml")]
        env = environment(repo)
        return {op: timed(iaasctl_cmd(*base, op, "-f", str(tmp / "specs"), "--yes"), env=env)
                for op in ("apply", "delete")}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab")
    parser.add_argument("other", type=Path, help="the checkout to compare this one with")
    parser.add_argument("--n", type=int, default=1)
    parser.add_argument("--pairs", type=int, default=10)
    args = parser.parse_args(argv)
    sides = {"this": REPO, "other": args.other.resolve()}
    if not (sides["other"] / "controller" / "cli").is_dir():
        parser.error(f"{args.other}: not a checkout of iaasctl")
    for repo in sides.values():
        compiled(repo)
    prepare()
    sweep()
    samples: dict[str, dict[str, list[float]]] = {side: {"apply": [], "delete": []} for side in sides}
    for pair in range(args.pairs):
        order = list(sides)
        random.Random(pair).shuffle(order)
        for side in order:
            try:
                for op, seconds in cycle(sides[side], args.n).items():
                    samples[side][op].append(seconds)
            finally:
                sweep()
        shown = (f"{side} {samples[side]['apply'][-1]:.3f}/{samples[side]['delete'][-1]:.3f} s" for side in order)
        print(f"pair {pair}: {', '.join(shown)}", flush=True)
    for line in summary(samples, args.n):
        print(line)
    return 0


def summary(samples: dict[str, dict[str, list[float]]], n: int) -> list[str]:
    """A line per operation: both medians, this over the other with its interval, and
    the median of the pairs' own ratios (pair i: the i-th sample of each side)."""
    lines = []
    for op, name in (("apply", "converge"), ("delete", "teardown")):
        result = Result(name, n, iaasctl=samples["this"][op], baselines={"other": samples["other"][op]})
        low, high = result.interval()
        own = statistics.median(a / b for a, b in zip(samples["this"][op], samples["other"][op], strict=True))
        lines.append(f"{name} N={n}: this {result.iaasctl_median:.3f} s, other {result.floor[1]:.3f} s, "
                     f"{result.ratio:.3f}x (90%: {low:.3f}-{high:.3f}); pair by pair, median {own:.3f}x")
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
