"""What a command imports: start-up is most of a small command's time (docs/performance.md),
so the heavy modules are imported only by the commands that need them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.testdriver.manifests import NETWORK, POOL, VOLUMES

REPO = Path(__file__).resolve().parents[2]
CORES = len(os.sched_getaffinity(0))
HEAVY = ("jsonschema", "yaml", "shutil", "concurrent.futures", "controller.execute", "logging", "inspect", "decimal",
         "hashlib")


def imported_by(*args: str) -> list[str]:
    """Run `iaasctl ARGS` in a fresh interpreter; the HEAVY modules it imported."""
    code = (f"import sys; from controller.cli import main; code = main({list(args)!r}); "
            f"import json; print(json.dumps([code, sorted(m for m in {HEAVY!r} if m in sys.modules)]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, check=False)
    status, modules = json.loads(done.stdout.splitlines()[-1])
    assert status in (0, 2), done.stderr
    return list(modules)


def test_valid_manifests_are_checked_without_jsonschema(tmp_path: Path) -> None:
    (tmp_path / "stack.yaml").write_text("---\n".join([POOL, VOLUMES, NETWORK]))
    assert imported_by("validate", str(tmp_path)) == ["yaml"]


def test_a_plan_of_unchanged_manifests_imports_none_of_the_heavy_modules(tmp_path: Path) -> None:
    """The second plan reads the manifest cache: no YAML, no schema, no executor. The
    first reads its manifests in a child process (cli/preload.py), on a host with a
    core for it: the command itself does not import YAML either."""
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "stack.yaml").write_text("---\n".join([POOL, VOLUMES, NETWORK]))
    command = ("--connect", "test:///default", "--state-dir", str(tmp_path / "state"),
               "plan", "-f", str(tmp_path / "specs"))
    assert imported_by(*command) == ([] if CORES > 1 else ["yaml"])
    assert (tmp_path / "state" / "cache" / "manifests.cache").is_file(), "the child's load is kept in the cache"
    assert imported_by(*command) == []


def test_apply_and_delete_run_their_changes_without_concurrent_futures_or_logging(tmp_path: Path) -> None:
    """The executor's workers are plain threads: concurrent.futures and the logging it
    imports cost a one-VM apply ~12 ms."""
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "stack.yaml").write_text("---\n".join([POOL, VOLUMES, NETWORK]))
    common = ["--connect", "test:///default", "--state-dir", str(tmp_path / "state")]
    # one process, holding a connection between the commands: test:///default is one
    # host for the connections of a process, gone when the last one closes
    code = (f"import sys, libvirt; from controller.cli import main; held = libvirt.open('test:///default'); "
            f"codes = [main({common + ['apply', '-f', str(tmp_path / 'specs'), '--yes']!r}), "
            f"main({common + ['delete', '-f', str(tmp_path / 'specs'), '--yes']!r})]; "
            f"print(codes, sorted(m for m in {HEAVY!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, check=False)
    assert "Deleted 4 objects." in done.stdout, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1] == f"[0, 0] {['controller.execute'] + ([] if CORES > 1 else ['yaml'])}"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "controller", *args], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, check=False)


def test_a_command_builds_only_its_own_parser_and_help_still_lists_them_all() -> None:
    """Building every subparser cost each command ~8 ms; only the one named is built."""
    import argparse

    from controller.cli import _parser

    def commands(parser: argparse.ArgumentParser) -> set[str]:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        return set(sub.choices)

    assert commands(_parser(["--connect", "test:///default", "apply", "-f", "x"])) == {"apply"}
    everything = commands(_parser(["--help"]))
    assert {"validate", "plan", "apply", "delete", "get", "run", "status", "resume"} <= everything
    assert commands(_parser(["--help", "apply"])) == everything     # top-level help lists them all
    assert commands(_parser(["bogus"])) == everything               # and so does the error

    listed = run_cli("--help")
    assert listed.returncode == 0 and "describe" in listed.stdout and "suspend" in listed.stdout
    own = run_cli("-c", "test:///default", "plan", "--help")
    assert own.returncode == 0 and "--allow-mass-delete" in own.stdout
    wrong = run_cli("bogus")
    assert wrong.returncode == 1 and "invalid choice: 'bogus'" in wrong.stderr and "'resume'" in wrong.stderr


def test_the_command_ends_at_once_with_its_exit_handlers_run_and_its_output_flushed(tmp_path: Path) -> None:
    """`run` ends the process without Python's shutdown: the exit status, the output,
    the exit handlers are as they would be; a thread still at work is waited for."""
    (tmp_path / "stack.yaml").write_text("---\n".join([POOL, VOLUMES, NETWORK]))
    code = ("import atexit, sys, threading, time\n"
            "atexit.register(lambda: print('handler ran'))\n"
            "if sys.argv[1] == 'busy':\n"
            "    threading.Thread(target=lambda: (time.sleep(0.3), print('worker done'))).start()\n"
            "from controller.cli import run\n"
            "run(sys.argv[2:])\n")

    def command(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=REPO,
                              env={**os.environ, "PYTHONPATH": str(REPO)}, check=False)

    good = command("idle", "validate", str(tmp_path))
    assert (good.returncode, good.stdout) == (0, "4 documents valid.\nhandler ran\n")
    bad = command("idle", "validate", str(tmp_path / "missing"))
    assert bad.returncode == 1 and "no such file or directory" in bad.stderr and bad.stdout == "handler ran\n"
    busy = command("busy", "validate", str(tmp_path))
    assert (busy.returncode, busy.stdout) == (0, "4 documents valid.\nworker done\nhandler ran\n")


def test_a_command_runs_without_the_cycle_collector_and_the_daemon_with_it(tmp_path: Path) -> None:
    """A one-off command's process is gone a second later: collecting cycles in it is
    time lost (cli.run). A daemon runs for months and must collect them."""
    (tmp_path / "stack.yaml").write_text(NETWORK)
    code = ("import atexit, gc, sys\n"
            "import controller.daemon\n"
            "controller.daemon.Daemon.run = lambda self: print('daemon collects', gc.isenabled()) or 0\n"
            "atexit.register(lambda: print('command collects', gc.isenabled()))\n"
            "from controller.cli import run\n"
            "run(sys.argv[1:])\n")

    def command(*args: str) -> list[str]:
        done = subprocess.run([sys.executable, "-c", code, "--connect", "test:///default", "--state-dir",
                               str(tmp_path / "state"), *args], capture_output=True, text=True, cwd=REPO,
                              env={**os.environ, "PYTHONPATH": str(REPO)}, check=False)
        assert done.returncode in (0, 2), done.stderr
        return done.stdout.splitlines()[-2:]

    assert command("plan", "-f", str(tmp_path))[-1] == "command collects False"
    assert command("run", "-f", str(tmp_path)) == ["daemon collects True", "command collects True"]
