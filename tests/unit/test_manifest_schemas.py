"""The JSON Schemas in schemas/: valid, strict, consistent with each other and with the
model, and loaded lazily once per process."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from controller import model
from controller.errors import ConfigError, ManifestInvalid
from controller.manifest import formats, load, schema
from controller.units import SIZE_PATTERN

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = {kind: json.loads((REPO / "schemas" / name).read_text()) for kind, name in schema.SCHEMA_FILES.items()}
GOOD = Path(__file__).parent / "manifests" / "good"


def subschemas(node: Any, path: str = "#") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from subschemas(value, f"{path}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from subschemas(value, f"{path}/{index}")


CACHES = (schema._schema_bytes, schema.schema_for, schema.validator_for, schema.compiled_check)


@pytest.fixture
def fresh_schema_cache() -> Iterator[None]:
    for cache in CACHES:
        cache.cache_clear()
    yield
    for cache in CACHES:
        cache.cache_clear()


@pytest.mark.parametrize("kind", list(SCHEMAS), ids=lambda k: k.value)
def test_schema_is_valid_draft_2020_12(kind: model.Kind) -> None:
    document = SCHEMAS[kind]
    assert document["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(document)
    assert document["properties"]["kind"] == {"const": kind.value}


@pytest.mark.parametrize("kind", list(SCHEMAS), ids=lambda k: k.value)
def test_every_object_is_closed(kind: model.Kind) -> None:
    """`additionalProperties: false` on every object that names its fields; the one map
    (labels) constrains both its keys and its values instead. Field lists inside
    `allOf` conditions (if/then) only narrow an object defined elsewhere."""
    for path, node in subschemas(SCHEMAS[kind]):
        if path.endswith("/properties") or "/allOf/" in path:
            continue
        if "properties" in node:
            assert node.get("type") == "object" and node.get("additionalProperties") is False, path
        elif node.get("type") == "object":
            assert path.endswith("/labels"), path
            assert "propertyNames" in node and isinstance(node["additionalProperties"], dict), path


def test_shared_definitions_agree() -> None:
    seen: dict[str, Any] = {}
    for document in SCHEMAS.values():
        for name, definition in document["$defs"].items():
            assert seen.setdefault(name, definition) == definition, f"$defs/{name} differs between schemas"
    assert {"name", "metadata"} <= set(seen)


def test_size_pattern_is_the_units_pattern() -> None:
    patterns = {node["pattern"] for document in SCHEMAS.values() for _, node in subschemas(document)
                if node.get("format") in ("disk-size", "memory-size")}
    assert patterns == {SIZE_PATTERN}


def test_every_format_used_is_checked() -> None:
    used = {node["format"] for document in SCHEMAS.values() for _, node in subschemas(document)
            if isinstance(node.get("format"), str)}
    assert used == set(formats.CHECKS)


def test_cloud_init_is_not_in_the_schema_yet() -> None:
    assert "cloudInit" not in SCHEMAS[model.Kind.VM]["properties"]["spec"]["properties"]


# manifest field -> (model class, model field), for every schema default
DEFAULTS = {
    (model.Kind.POOL, "spec/type"): (model.PoolSpec, "type"),
    (model.Kind.POOL, "spec/autostart"): (model.PoolSpec, "autostart"),
    (model.Kind.VOLUME, "spec/format"): (model.VolumeSpec, "format"),
    (model.Kind.NETWORK, "spec/autostart"): (model.NetworkSpec, "autostart"),
    (model.Kind.VM, "spec/power"): (model.VMSpec, "power"),
    (model.Kind.VM, "spec/restartPolicy"): (model.VMSpec, "restart_policy"),
    (model.Kind.VM, "spec/autostart"): (model.VMSpec, "autostart"),
    (model.Kind.VM, "spec/firmware"): (model.VMSpec, "firmware"),
    (model.Kind.VM, "spec/disks/bus"): (model.DiskSpec, "bus"),
    (model.Kind.VM, "spec/networks/model"): (model.NicSpec, "model"),
    **{(kind, "metadata/protect"): (model.Meta, "protect") for kind in model.Kind},
    **{(kind, "metadata/allowReplace"): (model.Meta, "allow_replace") for kind in model.Kind},
}


def test_schema_defaults_are_the_model_defaults() -> None:
    found = {}
    for kind, document in SCHEMAS.items():
        for path, node in subschemas(document):
            if "default" in node:
                field = path.replace("#/properties/", "").replace("#/$defs/", "").replace("/items", "")
                field = field.replace("/properties", "")
                found[(kind, field)] = node["default"]
    assert set(found) == set(DEFAULTS)
    for key, default in found.items():
        cls, name = DEFAULTS[key]
        assert {f.name: f.default for f in dataclasses.fields(cls)}[name] == default, key


def test_schemas_are_not_read_at_import() -> None:
    code = ("import controller.manifest as m; from controller.manifest import schema; "
            "assert schema.schema_for.cache_info().currsize == 0; "
            "assert schema.validator_for.cache_info().currsize == 0")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=REPO)


def test_each_schema_is_read_once_and_valid_documents_need_no_jsonschema() -> None:
    """Valid manifests are accepted by the compiled checks: jsonschema (~40 ms to import)
    is not even imported, and each schema file is read once per process."""
    code = f"""
import sys
from pathlib import Path
reads = []
real = Path.read_bytes
Path.read_bytes = lambda self: reads.append(self.name) or real(self)
from controller.manifest import load
load([{str(GOOD)!r}])
load([{str(GOOD)!r}])
assert sorted(reads) == {sorted(schema.SCHEMA_FILES.values())!r}, reads
assert "jsonschema" not in sys.modules
"""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=REPO)


def test_an_invalid_document_is_explained_by_jsonschema_compiled_once(
        fresh_schema_cache: None, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: iaas/v1\nkind: VirtualMachine\nmetadata: {name: a}\nspec: {vcpus: 1, memroy: 1GiB}\n")
    for _ in range(2):
        with pytest.raises(ManifestInvalid) as caught:
            load([str(bad)])
        assert [p.message for p in caught.value.problems] == [
            "missing required field 'memory'", "unknown field 'memroy'"]
    assert schema.validator_for.cache_info().currsize == 1


def test_schema_directory_override(fresh_schema_cache: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(REPO / "schemas", tmp_path / "schemas")
    vm = json.loads((tmp_path / "schemas" / "virtualmachine.json").read_text())
    vm["properties"]["spec"]["properties"]["vcpus"]["maximum"] = 1
    (tmp_path / "schemas" / "virtualmachine.json").write_text(json.dumps(vm))
    monkeypatch.setenv(schema.ENV_SCHEMAS, str(tmp_path / "schemas"))
    with pytest.raises(ManifestInvalid) as caught:
        load([str(GOOD)])
    assert [p.message for p in caught.value.problems] == ["2 is out of range (1 to 1)"]


def test_overriding_schema_that_breaks_the_metaschema_is_a_config_error(
        fresh_schema_cache: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(REPO / "schemas", tmp_path / "schemas")
    vm = json.loads((tmp_path / "schemas" / "virtualmachine.json").read_text())
    vm["properties"]["spec"]["properties"]["vcpus"]["minimum"] = "one"
    (tmp_path / "schemas" / "virtualmachine.json").write_text(json.dumps(vm))
    monkeypatch.setenv(schema.ENV_SCHEMAS, str(tmp_path / "schemas"))
    with pytest.raises(ConfigError, match="the VirtualMachine schema is invalid: 'one' is not of type 'number'"):
        load([str(GOOD)])


def test_missing_schema_is_a_config_error(fresh_schema_cache: None, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(schema.ENV_SCHEMAS, str(tmp_path))
    with pytest.raises(ConfigError, match="cannot read the .* schema"):
        load([str(GOOD)])
