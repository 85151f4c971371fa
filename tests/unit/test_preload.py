"""cli/preload.py: a command's YAML half, read in a forked child. Each case runs in a
fresh interpreter, as a command does: no fork happens where a thread is running, and
pytest's process may have some."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1

SCRIPT = """
import json, os, signal, sys, threading, time
from controller.cli.preload import Preload
from controller.errors import ManifestInvalid, Problem

parent = os.getpid()
case = sys.argv[1]

def work():
    if case == "invalid":
        raise ManifestInvalid([Problem("b.yaml", 3, "spec.vcpus", "expected an integer"),
                               Problem("a.yaml", 1, "kind", "unknown kind")])
    if case == "dies" and os.getpid() != parent:
        os.kill(os.getpid(), signal.SIGKILL)
    return {"pid": os.getpid()}

if case == "thread":
    threading.Thread(target=time.sleep, args=(0.5,), daemon=True).start()
try:
    value = Preload(work).result()
except ManifestInvalid as exc:
    value = {"problems": [str(p) for p in exc.problems]}
print(json.dumps({"parent": parent, **value}))
"""


def preloaded(case: str) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-c", SCRIPT, case], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)   # type: ignore[no-any-return]


@pytest.mark.skipif(CORES < 2, reason="one core: no child, by design (nothing would run beside it)")
def test_the_work_is_done_in_a_child_and_its_value_comes_back() -> None:
    seen = preloaded("value")
    assert seen["pid"] != seen["parent"]


def test_an_invalid_manifest_found_in_the_child_is_raised_here_with_every_problem() -> None:
    assert preloaded("invalid")["problems"] == ["a.yaml:1: kind: unknown kind",
                                               "b.yaml:3: spec.vcpus: expected an integer"]


def test_a_child_that_dies_before_it_answers_is_replaced_by_doing_the_work_here() -> None:
    seen = preloaded("dies")
    assert seen["pid"] == seen["parent"]


def test_with_a_thread_running_nothing_is_forked() -> None:
    """The child would inherit the locks that thread holds, and not the thread."""
    seen = preloaded("thread")
    assert seen["pid"] == seen["parent"]
