"""Shared pieces of the benchmarks: timing, medians, subprocess runs, the report.

Every figure is a median over repetitions that alternate between iaasctl and the
baseline in the same run, so that the machine's load at that moment hits both.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import sysconfig
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
# Every process of both sides starts as under a plain install: without `site`, so
# without the .pth files of this venv. Its editable install of iaasctl (setup-host.sh)
# has one that imports pathlib, urllib.parse and importlib.util into every process
# the venv's Python starts (~10 ms): the floor would pay that for us. The packages
# are found on PYTHONPATH instead (environment()).
START = [PYTHON, "-S"]


@dataclass
class Result:
    """One comparison: iaasctl against the floor (the faster baseline variant)."""

    name: str
    size: int
    iaasctl: list[float] = field(default_factory=list)              # seconds, one per repetition
    baselines: dict[str, list[float]] = field(default_factory=dict)  # variant -> seconds
    target: float | None = None                                    # the ratio iaasctl/floor to stay under
    note: str = ""

    @property
    def iaasctl_median(self) -> float:
        return statistics.median(self.iaasctl)

    @property
    def floor(self) -> tuple[str, float]:
        variant, samples = min(self.baselines.items(), key=lambda item: statistics.median(item[1]))
        return variant, statistics.median(samples)

    @property
    def ratio(self) -> float:
        return self.iaasctl_median / self.floor[1]

    def interval(self, share: float = 0.9, resamples: int = 2000) -> tuple[float, float]:
        """Where the ratio would fall in `share` of runs like this one, as a bootstrap
        sees it: every side's samples drawn again with replacement, and the ratio of
        iaasctl's median to the fastest variant's median each time. The floor is
        chosen again in each draw, as the run chose it: the least of several noisy
        medians is biased low, and an interval that took the winner as given would
        leave that out. With five samples or fewer a side it is rough; still, it says
        whether a ratio a few percent past its target is more than the noise of the
        run (seeded: the same samples give the same interval)."""
        draw = random.Random(0)

        def median_of_a_draw(samples: list[float]) -> float:
            return statistics.median(draw.choices(samples, k=len(samples)))

        ratios = sorted(median_of_a_draw(self.iaasctl) / min(map(median_of_a_draw, self.baselines.values()))
                        for _ in range(resamples))
        cut = round(resamples * (1 - share) / 2)
        return ratios[cut], ratios[-1 - cut]

    def summary(self) -> dict[str, Any]:
        variant, floor = self.floor
        return {**asdict(self), "iaasctl_median": self.iaasctl_median, "floor_variant": variant,
                "floor_median": floor, "ratio": self.ratio, "interval_90": self.interval(),
                "met": None if self.target is None else self.ratio <= self.target}


def timed(cmd: list[str], *, env: dict[str, str] | None = None, ok: tuple[int, ...] = (0,)) -> float:
    """Wall time of a whole process (start-up and imports included); `env` is
    environment() unless given."""
    env = environment() if env is None else env
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode not in ok:
        raise RuntimeError(f"{' '.join(cmd)}: exit {done.returncode}\n{done.stdout}\n{done.stderr}")
    return elapsed


def iaasctl_cmd(*args: str) -> list[str]:
    """`iaasctl ARGS` as the installed command runs it (the code from REPO: see
    environment()). Not `python -m controller`: runpy's imports (importlib.util, ~5 ms)
    are no part of what a user of the command waits for."""
    return [*START, "-c", "from controller.cli import run; run()", *args]


def compiled(repo: Path = REPO) -> None:
    """A checkout as an installed package is: byte-compiled, .pyc files and the
    dataclass methods' cache (controller/_methods.py). The environment may say
    PYTHONDONTWRITEBYTECODE, and then every iaasctl process would compile both."""
    env = environment(repo)
    subprocess.run([*START, "-m", "compileall", "-q", str(repo / "controller")], env=env, check=True)
    subprocess.run([*START, "-c", "from controller._methods import build; build()"], env=env, cwd=repo, check=True)


def environment(repo: Path = REPO) -> dict[str, str]:
    """For both sides: this checkout (or `repo`: bench/ab.py), then the venv's packages
    (see START)."""
    paths = dict.fromkeys([str(repo), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    return dict(os.environ, IAASCTL_DOMAIN_TYPE="qemu", PYTHONPATH=os.pathsep.join(paths))


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpus": os.cpu_count()}
    try:
        info["cpu"] = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                           if line.startswith("model name"))
        info["memory_gib"] = round(int(Path("/proc/meminfo").read_text().split()[1]) / 2**20, 1)
    except (OSError, StopIteration):
        pass
    info["python"] = sys.version.split()[0]
    info["qemu_reaped_by"] = _reaper()
    return info


def _reaper() -> str:
    """Who reaps QEMU when it exits: libvirtd's parent (QEMU is daemonized, an orphan
    of it). PID 1 that is not systemd may do it late, and then every domain destroy
    waits for it (scripts/start-libvirt.sh), which the figures would include."""
    try:
        pid = Path("/run/libvirtd.pid").read_text().strip()
        parent = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]
        name = Path(f"/proc/{parent}/comm").read_text().strip()
    except (OSError, IndexError):
        return "unknown"
    return f"{name} (pid {parent}{', the init' if parent == '1' else ', a subreaper'})"


def write_report(out: Path, sections: dict[str, Any]) -> None:
    """report.json (everything, raw samples included) and report.md (the tables)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(sections, indent=2, default=str))
    lines = [f"# iaasctl benchmarks ({sections['machine']['date']})", "",
             f"Machine: {sections['machine']}", ""]
    comparisons = sections.get("comparisons", [])
    if comparisons:
        lines += ["## iaasctl against the plain libvirt-python floor", "",
                  "| benchmark | N | iaasctl (median s) | floor (median s, variant) | ratio | 90% interval "
                  "| target | met |",
                  "|---|---|---|---|---|---|---|---|"]
        for c in comparisons:
            met = "" if c["met"] is None else ("yes" if c["met"] else "**no**")
            target = "" if c["target"] is None else f"≤ {c['target']}×"
            low, high = c["interval_90"]
            lines.append(f"| {c['name']} | {c['size']} | {c['iaasctl_median']:.3f} | "
                         f"{c['floor_median']:.3f} ({c['floor_variant']}) | {c['ratio']:.2f}× | "
                         f"{low:.2f}-{high:.2f}× | {target} | {met} |")
        lines += ["", "The interval: a bootstrap of both sides' samples (see Result.interval); "
                  "'met' is the medians' ratio against the target.", ""]
    for title, key in (("Scale of the reconcile loop (test driver, in process)", "scale"),
                       ("Daemon", "daemon")):
        if key in sections:
            lines += [f"## {title}", "", "```", json.dumps(sections[key], indent=2, default=str), "```", ""]
    if sections.get("profiles"):
        lines += ["## Profiles", ""]
        for name, text in sections["profiles"].items():
            lines += [f"### {name}", "", "```", text.rstrip(), "```", ""]
    (out / "report.md").write_text("\n".join(lines))
