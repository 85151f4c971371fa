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
HEAVY = ("jsonschema", "yaml", "shutil", "concurrent.futures", "controller.execute", "logging")


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
    """The second plan reads the manifest cache: no YAML, no schema, no executor."""
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "stack.yaml").write_text("---\n".join([POOL, VOLUMES, NETWORK]))
    command = ("--connect", "test:///default", "--state-dir", str(tmp_path / "state"),
               "plan", "-f", str(tmp_path / "specs"))
    assert imported_by(*command) == ["yaml"]
    assert imported_by(*command) == []
