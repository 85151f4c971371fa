"""The compiled schema checks (controller/manifest/schema_checks.py) against jsonschema.

The compiled check may only say "valid" where jsonschema says so too: a document it
wrongly accepted would skip every schema rule. Here both judge the same documents —
every document of the test corpus and the examples, and mutations of them — and
must agree. The file itself must be what scripts/gen_schema_checks.py makes of the
schemas in the repository.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.errors import ManifestInvalid
from controller.manifest import load, schema
from controller.model import Kind

REPO = Path(__file__).resolve().parents[2]
KINDS = {kind.value: kind for kind in Kind}


def _kind(doc: Any) -> Kind | None:
    kind = doc.get("kind") if isinstance(doc, dict) else None
    return KINDS.get(kind) if isinstance(kind, str) else None


def documents() -> list[Any]:
    found = []
    for path in sorted([*(REPO / "tests/unit/manifests").rglob("*.y*ml"), *(REPO / "specs/examples").rglob("*.y*ml")]):
        try:
            found += [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8"))
                      if isinstance(doc, dict) and _kind(doc) is not None]
        except (yaml.YAMLError, UnicodeDecodeError, RecursionError):
            continue      # the corpus of unreadable files: never reaches a schema
    return found


CORPUS = documents()
VALID = [doc for doc in CORPUS if schema.validator_for(KINDS[doc["kind"]]).is_valid(doc)]


def verdicts(doc: Any, kind: Kind) -> tuple[bool, bool]:
    return schema.accepts(doc, kind), schema.validator_for(kind).is_valid(doc)


def test_generated_checks_are_current() -> None:
    done = subprocess.run([sys.executable, str(REPO / "scripts/gen_schema_checks.py"), "--check"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_the_corpus_has_both_kinds_of_documents() -> None:
    assert len(VALID) >= 20 and len(CORPUS) - len(VALID) >= 40, (len(VALID), len(CORPUS))
    assert {doc["kind"] for doc in VALID} == set(KINDS)


@pytest.mark.parametrize("index", range(len(CORPUS)))
def test_corpus_document(index: int) -> None:
    doc = CORPUS[index]
    fast, judge = verdicts(doc, KINDS[doc["kind"]])
    assert fast == judge, json.dumps(doc, default=str)


# Values that probe the places the two could differ: integers against 2.0 and True,
# sizes as numbers (their format applies to integers too), strings that almost match.
PROBES = st.sampled_from([
    0, 1, 2, 2.0, 2.5, -1, True, False, None, 16777216, 1000, 1023 * 1024, 512, 513, 1 << 40,
    "", "a", "A", "-a", "a-", "x" * 64, "1GiB", "1 GiB", " 1GiB", "1GB", "16MiB", "15MiB", "513B",
    "/abs", "rel", "/a/../b", "/a//b", "52:54:00:12:34:56", "53:54:00:12:34:56", "10.0.0.1", "10.0.0.0/24",
    "10.0.0.1/24", "br0", "br/0", "example.com", "-bad.com", "nat", "bridge", "isolated", "qcow2", "raw",
    "running", "stopped", "virtio", "uefi", [], [1], {}, {"a": 1}, {"name": "x"},
])
KEYS = st.sampled_from(["name", "spec", "metadata", "labels", "memory", "vcpus", "size", "mode", "bridge",
                        "ipv4", "dhcp", "hosts", "mac", "ip", "disks", "networks", "pool", "source", "path",
                        "format", "capacity", "boot", "kernel", "power", "extra", "apiVersion", "kind"])


def _containers(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path] if isinstance(node, (dict, list)) and path else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _containers(value, path + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _containers(value, path + (index,))
    return found


def _leaves(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(node, dict):
        return [p for key, value in node.items() for p in _leaves(value, path + (key,))] + ([path] if path else [])
    if isinstance(node, list):
        return [p for index, value in enumerate(node) for p in _leaves(value, path + (index,))] + (
            [path] if path else [])
    return [path]


def _at(node: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        node = node[part]
    return node


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutations_of_valid_documents(data: st.DataObject) -> None:
    doc = copy.deepcopy(data.draw(st.sampled_from(VALID)))
    for _ in range(data.draw(st.integers(1, 3))):
        operation = data.draw(st.sampled_from(["replace", "delete", "add"]))
        if operation == "replace":
            path = data.draw(st.sampled_from(_leaves(doc)))
            _at(doc, path[:-1])[path[-1]] = copy.deepcopy(data.draw(PROBES))
        elif operation == "delete":
            path = data.draw(st.sampled_from(_leaves(doc)))
            parent = _at(doc, path[:-1])
            del parent[path[-1]]
        else:
            containers = [p for p in _containers(doc) if isinstance(_at(doc, p), dict)]
            if containers:
                target = _at(doc, data.draw(st.sampled_from(containers)))
                target[data.draw(KEYS)] = copy.deepcopy(data.draw(PROBES))
        if not _leaves(doc):
            return
    kind = _kind(doc)
    for judged in ([kind] if kind else list(Kind)):
        fast, judge = verdicts(doc, judged)
        assert fast == judge, json.dumps(doc, default=str)


def test_an_edited_schema_is_not_checked_by_the_compiled_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """$IAASCTL_SCHEMAS (or an edit without regenerating) goes to jsonschema alone."""
    shutil.copytree(REPO / "schemas", tmp_path / "schemas")
    vm = json.loads((tmp_path / "schemas" / "virtualmachine.json").read_text())
    vm["properties"]["spec"]["properties"]["vcpus"]["maximum"] = 1
    (tmp_path / "schemas" / "virtualmachine.json").write_text(json.dumps(vm))
    monkeypatch.setenv(schema.ENV_SCHEMAS, str(tmp_path / "schemas"))
    for cache in (schema._schema_bytes, schema.schema_for, schema.validator_for, schema.compiled_check):
        cache.cache_clear()
    try:
        assert schema.compiled_check(Kind.VM) is None
        assert schema.compiled_check(Kind.NETWORK) is not None     # same bytes as generated
        manifest = tmp_path / "vm.yaml"
        manifest.write_text("apiVersion: iaas/v1\nkind: VirtualMachine\nmetadata: {name: a}\n"
                            "spec: {vcpus: 2, memory: 1GiB}\n")
        with pytest.raises(ManifestInvalid) as caught:
            load([str(manifest)])
        assert [p.message for p in caught.value.problems] == ["2 is out of range (1 to 1)"]
    finally:
        monkeypatch.delenv(schema.ENV_SCHEMAS)
        for cache in (schema._schema_bytes, schema.schema_for, schema.validator_for, schema.compiled_check):
            cache.cache_clear()
