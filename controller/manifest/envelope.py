"""Stage 2a of manifest loading: what a document claims to be, before its schema is chosen.

Checks that a document is a mapping with `apiVersion: iaas/v1` and a known `kind`,
and reads `metadata.name` when it is valid, so that names are known (for
uniqueness and references) even when the rest of the document is wrong.
"""

from __future__ import annotations

from controller.errors import Problem
from controller.manifest import formats
from controller.manifest.located import Document, shown
from controller.model import Kind

API_VERSION = "iaas/v1"
KINDS = {kind.value: kind for kind in Kind}


def kind_of(doc: Document) -> tuple[Kind | None, list[Problem]]:
    """The document's kind, or None with the findings that say why there is none."""
    value = doc.value
    if not isinstance(value, dict):
        return None, [doc.problem((), "a manifest document must be a mapping with apiVersion, kind, "
                                      f"metadata and spec (got {_what(value)})")]
    problems = []
    if "apiVersion" not in value:
        problems.append(doc.problem((), "missing required field 'apiVersion'"))
    elif value["apiVersion"] != API_VERSION:
        problems.append(doc.problem(("apiVersion",), f"unsupported apiVersion {shown(value['apiVersion'])} "
                                                     f"(expected {API_VERSION})"))
    kind = KINDS.get(value["kind"]) if isinstance(value.get("kind"), str) else None
    if "kind" not in value:
        problems.append(doc.problem((), "missing required field 'kind'"))
    elif kind is None:
        problems.append(doc.problem(("kind",), f"unknown kind {shown(value['kind'])} "
                                               f"(expected one of {', '.join(KINDS)})"))
    return (None if problems else kind), problems


def declared_name(doc: Document) -> str | None:
    """`metadata.name` if it is a valid name, else None (the schema reports why)."""
    metadata = doc.value.get("metadata") if isinstance(doc.value, dict) else None
    name = metadata.get("name") if isinstance(metadata, dict) else None
    if isinstance(name, str) and formats.explain("resource-name", name) is None:
        return name
    return None


def _what(value: object) -> str:
    if isinstance(value, list):
        return "a list"
    return shown(value)
