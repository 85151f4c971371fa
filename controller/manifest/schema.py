"""Stage 2b of manifest loading: validate a document against its kind's JSON Schema.

The schemas in `schemas/` are the single source of truth for the shape of a
manifest. Each is read and compiled once per process, on first use. jsonschema's
errors are turned into findings at the line of the offending value (of the key,
for an unknown or forbidden key; of the parent, for a missing one), with messages
for people: `spec: unknown field 'memroy'`, `spec.memory: 'lots' is not a size ...`.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from jsonschema.protocols import Validator

from controller.errors import ConfigError, Problem
from controller.manifest import formats, yaml11
from controller.manifest.located import Document, JsonPath, format_path, shown
from controller.model import Kind
from controller.resources import data_dir

SCHEMA_FILES = {
    Kind.POOL: "storagepool.json",
    Kind.VOLUME: "volume.json",
    Kind.NETWORK: "network.json",
    Kind.VM: "virtualmachine.json",
}
ENV_SCHEMAS = "IAASCTL_SCHEMAS"

# JSON Schema counts 2.0 as an integer; a manifest that says `vcpus: 2.0` is a mistake.
_TYPES = Draft202012Validator.TYPE_CHECKER.redefine(
    "integer", lambda _checker, value: isinstance(value, int) and not isinstance(value, bool))
_ManifestValidator: Any = jsonschema.validators.extend(  # type: ignore[no-untyped-call]
    Draft202012Validator, type_checker=_TYPES)
# Keywords whose failure on a field with a `format` is best explained by the format.
_FORMAT_LIKE = {"format", "pattern", "maxLength", "minLength"}


def schema_dir() -> Path:
    """`$IAASCTL_SCHEMAS` when set, else `schemas/` of the checkout or of the installation."""
    return data_dir("schemas", env=ENV_SCHEMAS)


@functools.cache
def schema_for(kind: Kind) -> dict[str, Any]:
    path = schema_dir() / SCHEMA_FILES[kind]
    try:
        schema: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the {kind.value} schema {path}: {exc}") from exc
    return schema


@functools.cache
def validator_for(kind: Kind) -> Validator:
    schema = schema_for(kind)
    # The shipped schemas are checked against the metaschema by the test suite; doing it
    # here too cost more than validating the manifests. Schemas from $IAASCTL_SCHEMAS are
    # someone's edit: those are checked, once per process.
    if os.environ.get(ENV_SCHEMAS):
        try:
            _ManifestValidator.check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise ConfigError(f"the {kind.value} schema is invalid: {exc.message}") from exc
    validator: Validator = _ManifestValidator(schema, format_checker=formats.checker())
    return validator


@dataclass(frozen=True)
class _Finding:
    at: JsonPath          # the instance the finding is about (for dedup and `skip`)
    problem: Problem
    is_type: bool = False


def validate(doc: Document, kind: Kind) -> tuple[list[Problem], set[JsonPath]]:
    """Findings for `doc`, and the paths they are about (later checks skip those)."""
    root = schema_for(kind)
    instance: Any = doc.value
    findings = [f for error in validator_for(kind).iter_errors(instance) for f in _explain(error, doc, root)]
    typed = {f.at for f in findings if f.is_type}
    kept = [f for f in findings if f.is_type or f.at not in typed]   # a type error says it all
    return sorted({f.problem for f in kept}), {f.at for f in kept}


def _explain(error: ValidationError, doc: Document, root: dict[str, Any]) -> Iterator[_Finding]:
    path: JsonPath = tuple(error.absolute_path)
    # jsonschema types these as "maybe unset"; for an error from iter_errors they are set.
    instance: Any = error.instance
    schema: Any = error.schema
    value: Any = error.validator_value
    keyword = error.validator
    when = _condition(error, root)

    def at(message: str, key: str | None = None) -> _Finding:
        """A finding about the value at `path`, or about one of its keys (at the key's line)."""
        if key is None:
            return _Finding(path, doc.problem(path, message))
        line = doc.key_line_of(path + (key,))
        return _Finding(path + (key,), Problem(doc.file, line, format_path(path), message))

    if keyword == "type":
        expected = [value] if isinstance(value, str) else list(value)
        loc = doc.locs.get(path)
        message = yaml11.type_mismatch(loc.scalar if loc else None, instance, expected)
        yield _Finding(path, doc.problem(path, message), is_type=True)
    elif keyword == "required":
        for key in value:
            if key not in instance:
                yield at(f"missing required field '{key}'" + (f" (needed when {when})" if when else ""))
    elif keyword == "additionalProperties":
        for key in _extra_keys(instance, schema):
            yield at(f"unknown field '{key}'", key)
    elif keyword == "not" and isinstance(value, dict) and set(value) == {"required"}:
        for key in value["required"]:
            yield at(f"field '{key}' is not allowed" + (f" when {when}" if when else ""), key)
    elif list(error.absolute_schema_path)[-2:-1] == ["propertyNames"]:
        yield at(formats.explain(schema.get("format", ""), instance) or error.message, instance)
    elif keyword in _FORMAT_LIKE and "format" in schema:
        yield at(formats.explain(schema["format"], instance) or error.message)
    else:
        yield at(_message(error, when))


def _message(error: ValidationError, when: str) -> str:
    keyword = error.validator
    value: Any = error.validator_value
    instance: Any = error.instance
    schema: Any = error.schema
    if keyword == "enum":
        return f"{shown(instance)} is not one of {', '.join(str(v) for v in value)}"
    if keyword == "const":
        return f"must be {shown(value)}" + (f" when {when}" if when else "") + f" (got {shown(instance)})"
    if keyword in ("minimum", "maximum"):
        if "minimum" in schema and "maximum" in schema:
            return f"{instance} is out of range ({schema['minimum']} to {schema['maximum']})"
        return f"must be at {'least' if keyword == 'minimum' else 'most'} {value} (got {instance})"
    if keyword == "maxLength":
        return f"is longer than {value} characters"
    if keyword == "oneOf" and all(set(branch) == {"required"} for branch in value):
        choices = [key for branch in value for key in branch["required"]]
        given = [key for key in choices if isinstance(instance, dict) and key in instance]
        return f"give exactly one of {' or '.join(repr(c) for c in choices)}" + (
            f" (got {' and '.join(repr(g) for g in given)})" if given else "")
    return error.message


def _extra_keys(instance: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    known = schema.get("properties", {})
    return [key for key in instance if key not in known]


def _condition(error: ValidationError, root: dict[str, Any]) -> str:
    """`mode is bridge` when the error comes from the `then` of an `if`, else ''."""
    schema_path = list(error.absolute_schema_path)
    if "then" not in schema_path:
        return ""
    cut = len(schema_path) - 1 - schema_path[::-1].index("then")
    node = _walk(root, schema_path[:cut])
    condition = node.get("if", {}) if isinstance(node, dict) else {}
    parts = []
    for key, sub in condition.get("properties", {}).items():
        if "const" in sub:
            parts.append(f"{key} is {sub['const']}")
        elif "enum" in sub:
            parts.append(f"{key} is {' or '.join(str(v) for v in sub['enum'])}")
    named = set(condition.get("properties", {}))
    parts += [f"{key} is given" for key in condition.get("required", []) if key not in named]
    return " and ".join(parts)


def _walk(root: dict[str, Any], schema_path: list[str | int]) -> Any:
    """The subschema at `schema_path`, following local `$ref`s (absent from the path)."""
    node: Any = root
    for part in schema_path:
        while isinstance(node, dict) and "$ref" in node and part not in node:
            node = _walk(root, node["$ref"].removeprefix("#/").split("/"))
        node = node[part]
    return node
