"""The API's answers held to its description, `schemas/openapi.json`: the status must
be one the operation documents, and a JSON body must match that status's schema
(every object there lists its fields: nothing else may appear). What schemathesis's
status-code and response-schema checks do, without its dependencies."""

from __future__ import annotations

import functools
import json
import re
from typing import Any

from jsonschema import Draft202012Validator

from tests.conftest import REPO


@functools.cache
def document() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((REPO / "schemas" / "openapi.json").read_text())
    return loaded


@functools.cache
def _templates() -> list[tuple[re.Pattern[str], str]]:
    found = [(re.compile("^" + re.sub(r"\{[^/]+\}", "[^/]+", path) + "$"), path) for path in document()["paths"]]
    return sorted(found, key=lambda item: item[1].count("{"))     # a literal path before a template


def _validator(schema: dict[str, Any]) -> Draft202012Validator:
    return Draft202012Validator({**schema, "components": document()["components"]})


def check(method: str, path: str, status: int, content_type: str, body: bytes) -> None:
    """Raise AssertionError if the answer is not one the description allows."""
    normal = "/" + "/".join(p for p in path.split("/") if p)   # the router ignores empty segments
    template = next((t for pattern, t in _templates() if pattern.match(normal)), None)
    operation = document()["paths"][template].get(method.lower()) if template else None
    if method == "HEAD":
        return
    if operation is None:      # no such path, or not this method: an error document
        assert status in (400, 404, 405), (method, path, status)
        responses = {str(status): {"content": {"application/json": {"schema": {
            "$ref": "#/components/schemas/Error"}}}}}
    else:
        responses = operation["responses"]
    assert str(status) in responses, f"{method} {path}: {status} is not documented for {template}"
    content = responses[str(status)].get("content", {})
    kind = content_type.split(";")[0]
    assert kind in content, f"{method} {path}: {status} answered {kind}, documented {list(content)}"
    if kind == "application/json":
        errors = sorted(_validator(content[kind]["schema"]).iter_errors(json.loads(body)), key=str)
        assert not errors, f"{method} {path} {status}: " + "; ".join(
            f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:5])
