"""The benchmark harness itself stays runnable: its in-process part on tiny sizes.
(The figures are the benchmark's business, never asserted here.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench import common, scale


def test_scale_benchmark_and_report_run(tmp_path: Path) -> None:
    summary, profiles = scale.run([10, 20])
    assert [row["n"] for row in summary["rows"]] == [10, 20]
    assert all(row["noop_pass_median_s"] > 0 for row in summary["rows"])
    assert "slope_ms_per_1000_vms" in summary and "growth_exponent" in summary and profiles
    result = common.Result("noop", 10, iaasctl=[0.2, 0.3, 0.25], baselines={"a": [0.1], "b": [0.2]}, target=2.0)
    assert result.floor == ("a", 0.1) and round(result.ratio, 6) == 2.5 and result.summary()["met"] is False
    common.write_report(tmp_path, {"machine": common.machine(), "comparisons": [result.summary()],
                                   "scale": summary, "profiles": profiles})
    assert "| noop | 10 |" in (tmp_path / "report.md").read_text()
    assert json.loads((tmp_path / "report.json").read_text())["comparisons"][0]["ratio"] == result.ratio


def test_the_ratio_comes_with_an_interval_as_wide_as_the_samples_are_noisy() -> None:
    steady = common.Result("converge", 1, iaasctl=[1.0] * 5, baselines={"floor": [0.9] * 5})
    assert steady.interval() == (steady.ratio, steady.ratio)
    noisy = common.Result("converge", 1, iaasctl=[0.8, 0.9, 1.0, 1.1, 1.4], baselines={"floor": [0.7, 0.9, 1.0, 1.2]})
    low, high = noisy.interval()
    assert low < 1.0 < high and low < noisy.ratio < high
    assert noisy.interval() == (low, high), "the same samples give the same interval"
    assert noisy.interval(share=0.5)[1] - noisy.interval(share=0.5)[0] < high - low


def test_the_interval_chooses_the_floor_again_in_each_draw() -> None:
    """Two variants of the same speed: the run's floor is the luckier median of the
    two, and the interval says so instead of taking that luck as given."""
    one = common.Result("converge", 10, iaasctl=[1.0, 1.1, 1.2, 1.3, 1.4],
                        baselines={"a": [1.0, 1.1, 1.2, 1.3, 1.4]})
    two = common.Result("converge", 10, iaasctl=one.iaasctl,
                        baselines={**one.baselines, "b": [1.0, 1.1, 1.2, 1.3, 1.4]})
    assert one.ratio == two.ratio == 1.0
    assert two.interval()[0] > one.interval()[0] and two.interval()[1] > one.interval()[1]


def test_the_floor_is_chosen_among_different_programs_only() -> None:
    """A pool as wide as the VMs or wider, or of one thread, is a program already in
    the list: the fastest of several medians of one program is below its median by
    the noise, and would be a floor lower than the script's."""
    from bench.lifecycle import baselines

    assert baselines(1) == [("sequential", 1), ("1 thread, 1 connection", (1, "--connection-each"))]
    assert [name for name, _ in baselines(30)] == [
        "sequential", "4 threads", "8 threads", "8 threads, 8 connections", "30 threads, 30 connections"]
    for n in (1, 2, 4, 8, 10, 30):
        programs = [threads for _, threads in baselines(n)]
        assert len(programs) == len(set(programs)), n
        assert all((t if isinstance(t, int) else t[0]) <= n for t in programs), n


def traced_apply(tmp_path: Path, *, with_phases: bool = False) -> tuple[list[Any], float]:
    """An `apply` of one network on the test driver, run and traced as bench.trace runs
    it: its calls and when its process ended."""
    from bench import trace

    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "net.yaml").write_text("apiVersion: iaas/v1\nkind: Network\nmetadata: {name: traced-net}\n"
                                    "spec: {mode: nat, ipv4: {cidr: 10.251.0.0/24}}\n")
    out = tmp_path / "iaasctl.trace"
    base = ["--connect", "test:///default", "--state-dir", str(tmp_path / "state")]
    common.timed(trace.traced(common.iaasctl_cmd(*base, "apply", "-f", str(specs), "--yes"), out,
                              with_phases=with_phases))
    (calls, end), = trace.read(out)
    return calls, end


def test_a_traced_command_records_its_libvirt_calls_and_its_end(tmp_path: Path) -> None:
    """bench.trace: the command runs as the benchmark runs it, and the trace shows its
    reads, its changes (told apart) and when the process ended."""
    from bench import trace

    calls, end = traced_apply(tmp_path)
    names = [call.name for call in calls]
    assert "virConnect.listAllNetworks" in names and "virConnect.networkDefineXML" in names
    changes = [call.name for call in calls if call.changes]
    assert "virConnect.networkDefineXML" in changes and "virConnect.listAllNetworks" not in changes
    assert 0 < calls[0].start_ms <= max(call.ends_ms for call in calls) <= end
    assert "first change" in trace.summary(calls, end)


def test_a_traced_command_with_phases_shows_its_own_steps_apart_from_libvirt_calls(tmp_path: Path) -> None:
    """bench.trace --phases: iaasctl's steps (imports, observe, plan, commits) are in
    the trace, never taken for libvirt changes, in the order the command took them."""
    from bench import trace

    calls, end = traced_apply(tmp_path, with_phases=True)
    ours: dict[str, trace.Call] = {}
    for call in calls:
        if call.ours:
            ours.setdefault(call.name, call)     # the first of each: the confirming plan comes again
    assert not any(call.changes for call in ours.values())
    observed, planned = ours["@controller.observe.observe"], ours["@controller.plan.plan"]
    define = next(call for call in calls if call.name == "virConnect.networkDefineXML")
    assert ours["@import controller.reconcile"].start_ms < observed.start_ms < planned.start_ms < define.start_ms
    assert ours["@controller.state.core.StoreCore._commit"].length_ms >= 0
    assert "first change" in trace.summary(calls, end)
    shown = trace.phases(calls)
    assert shown.index("observe.observe") < shown.index("plan.plan") < shown.index("state.core.StoreCore._commit")


def test_two_checkouts_are_compared_by_medians_and_pair_by_pair() -> None:
    """bench.ab's report: the pairs' own ratios can say another thing than the medians'."""
    from bench.ab import summary

    samples = {"this": {"apply": [1.0, 2.0, 3.0], "delete": [0.5, 0.5, 0.5]},
               "other": {"apply": [2.0, 1.0, 3.0], "delete": [1.0, 1.0, 1.0]}}
    converge, teardown = summary(samples, 1)
    assert converge.startswith("converge N=1: this 2.000 s, other 2.000 s, 1.000x (90%: ")
    assert converge.endswith("pair by pair, median 1.000x")          # 0.5, 2.0, 1.0
    assert "this 0.500 s, other 1.000 s, 0.500x (90%: 0.500-0.500)" in teardown
