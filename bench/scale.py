"""Benchmark 4: the reconcile loop itself, on libvirt's in-process test driver.

For N managed VMs (plus their network), converge once, then time no-op reconcile
passes (manifests from the cache as the daemon has them, observe, plan, find
nothing to do; and once more with a fresh load of every manifest) and report the median
per N, the least-squares slope, how far from linear the growth is (and the exponent
k of a fitted t ~ n^k), the memory a
pass allocates at its peak, and a cProfile of the largest pass.
"""

from __future__ import annotations

import cProfile
import io
import math
import pstats
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from controller import manifest
from controller.manifest.cache import load_cached
from controller.config import Config
from controller.plan import Policy
from controller.reconcile import Session, apply

PASSES = 5


def manifests(n: int) -> str:
    docs = ["apiVersion: iaas/v1\nkind: Network\nmetadata: {name: lab}\n"
            "spec: {mode: nat, ipv4: {cidr: 10.77.0.0/16}}\n"]
    docs += [f"apiVersion: iaas/v1\nkind: VirtualMachine\nmetadata: {{name: vm-{i}}}\n"
             f"spec: {{vcpus: 1, memory: 128MiB, networks: [{{network: lab}}]}}\n" for i in range(n)]
    return "---\n".join(docs)


def one_pass(session: Session, specs: Path, *, cached: bool = True) -> float:
    """One no-op pass as the daemon runs it (manifests from the content-keyed cache), or
    with a fresh load and validation of every manifest (`cached=False`)."""
    started = time.perf_counter()
    desired = (load_cached([str(specs)], cache_dir=Path(session.config.state_dir) / "cache") if cached
               else manifest.load([str(specs)]))
    result = apply(session, desired, policy=Policy())
    elapsed = time.perf_counter() - started
    assert result.plan.empty, "a converged host must plan nothing"
    return elapsed


def measure(n: int) -> tuple[dict[str, Any], str]:
    tmp = Path(tempfile.mkdtemp(prefix="iaasctl-scale-"))
    specs = tmp / "specs"
    specs.mkdir()
    (specs / "all.yaml").write_text(manifests(n))
    config = Config(connect="test:///default", state_dir=str(tmp / "state"), parallelism=4)
    with Session.open(config) as session:
        started = time.perf_counter()
        converged = apply(session, manifest.load([str(specs)]), policy=Policy())
        converge = time.perf_counter() - started
        assert converged.converged
        times = [one_pass(session, specs) for _ in range(PASSES)]
        fresh = [one_pass(session, specs, cached=False) for _ in range(3)]
        tracemalloc.start()
        one_pass(session, specs)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        profiler = cProfile.Profile()
        profiler.enable()
        one_pass(session, specs)
        profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(15)
    return {"n": n, "converge_s": converge, "noop_pass_median_s": statistics.median(times),
            "noop_pass_samples_s": times, "noop_pass_fresh_load_median_s": statistics.median(fresh),
            "peak_alloc_mib": peak / 2**20}, text.getvalue()


def run(sizes: list[int]) -> tuple[dict[str, Any], dict[str, str]]:
    rows, profiles = [], {}
    for n in sizes:
        row, profile = measure(n)
        rows.append(row)
        profiles[f"no-op pass, {n} VMs"] = profile
    xs = [r["n"] for r in rows]
    ys = [r["noop_pass_median_s"] for r in rows]
    fit = statistics.linear_regression(xs, ys) if len(rows) > 1 else None
    summary: dict[str, Any] = {"rows": rows}
    if fit is not None:
        predicted = [fit.intercept + fit.slope * x for x in xs]
        summary["slope_ms_per_1000_vms"] = fit.slope * 1000 * 1000
        summary["intercept_ms"] = fit.intercept * 1000
        summary["worst_deviation_from_linear"] = max(abs(y - p) / y for y, p in zip(ys, predicted, strict=True))
        # t ~ n^k: k = 1 is linear growth, whatever the constant costs at small n
        summary["growth_exponent"] = statistics.linear_regression([math.log(x) for x in xs],
                                                                  [math.log(y) for y in ys]).slope
        per_vm = [y / x for x, y in zip(xs, ys, strict=True)]
        summary["per_vm_ms"] = [v * 1000 for v in per_vm]
        summary["target_1000_under_1s"] = next((r["noop_pass_median_s"] < 1.0 for r in rows if r["n"] == 1000), None)
    return summary, profiles
