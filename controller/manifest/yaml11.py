"""YAML 1.1 implicit typing: say how an unquoted scalar was read, and refuse the traps.

PyYAML follows YAML 1.1, where plain `52:54:00:12:34:56` is the integer 41135085296
(base 60), `no` is false, `0755` is 493 and `1.10` is 1.1 (RELIABILITY B4). Stage 2
(`schema`) asks `type_mismatch` to word a type error on such a value (suggesting
quotes); stage 3 (`spelling_problems`, run after the schema accepted a document)
refuses the spellings that the schema cannot see: `yes`/`on`/`off` for a boolean
and `010`/`0x1f`/`1_000`/`1:30` for an integer.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable

from controller.errors import Problem
from controller.manifest.located import Document, JsonPath, Scalar, brief, shown

BOOLEAN_SPELLINGS = {"true", "True", "TRUE", "false", "False", "FALSE"}   # YAML 1.2 core schema
_DECIMAL = re.compile(r"^-?(0|[1-9][0-9]*)$")
_TYPE_NAMES = {
    "string": "a string", "integer": "an integer", "number": "a number", "boolean": "true or false",
    "object": "a mapping", "array": "a list", "null": "nothing",
}


def how_read(scalar: Scalar, value: object) -> str:
    """`the integer 41135085296 (base 60)`, `the boolean false`, `null`..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"the integer {shown(value)}{_base(scalar.text)}"
    if isinstance(value, float):
        return f"the number {shown(value)}"
    if isinstance(value, (datetime.date, datetime.datetime)):
        return f"the date {value.isoformat()}"
    return shown(value)


def _base(text: str) -> str:
    digits = text.lstrip("+-").replace("_", "")
    if ":" in digits:
        return " (base 60)"
    if digits.startswith(("0x", "0X")):
        return " (hexadecimal)"
    if digits.startswith(("0b", "0B")):
        return " (binary)"
    if len(digits) > 1 and digits.startswith("0"):
        return " (octal)"
    return ""


def _text(scalar: Scalar) -> str:
    return brief(scalar.text)


def type_mismatch(scalar: Scalar | None, value: object, expected: Iterable[str]) -> str:
    """The message for a value that is not of the schema's type(s)."""
    wanted = list(expected)
    if scalar is not None and scalar.plain and value is None:
        written = f"{scalar.text.strip()} is YAML for no value" if scalar.text.strip() else "empty value"
        return f"{written}: give a value or leave the field out"
    if scalar is not None and scalar.plain and "string" in wanted and not isinstance(value, str):
        return f"{_text(scalar)} is read by YAML 1.1 as {how_read(scalar, value)}; quote it: \"{_text(scalar)}\""
    if wanted == ["boolean"] and isinstance(value, str):
        if scalar is not None and not scalar.plain and value in BOOLEAN_SPELLINGS:
            return f"{shown(value)} is quoted, so it is a string: write {value.lower()} without quotes"
        return f"{shown(value)} is not a boolean: write true or false"
    if "integer" in wanted and isinstance(value, str) and scalar is not None and not scalar.plain \
            and _DECIMAL.fullmatch(value):
        return f"{shown(value)} is quoted, so it is a string: write {brief(value)} without quotes"
    return f"expected {' or '.join(_TYPE_NAMES.get(t, t) for t in wanted)}, got {_describe(scalar, value)}"


def _describe(scalar: Scalar | None, value: object) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return shown(value)
    if scalar is None:
        return repr(value)
    read = how_read(scalar, value)
    if scalar.plain and scalar.text.lower() not in (str(value).lower(), repr(value).lower()):
        return f"{read} (written {_text(scalar)})"
    return read


def spelling_problems(doc: Document, skip: set[JsonPath]) -> list[Problem]:
    """Booleans spelled other than true/false, integers spelled other than in decimal.

    Run on values the schema accepted (paths in `skip`, and below them, already have
    a finding), so a boolean here sits in a boolean field and an integer in an
    integer field.
    """
    problems = []
    for path, loc in doc.locs.items():
        scalar = loc.scalar
        if scalar is None or not scalar.plain or any(path[:n] in skip for n in range(len(path) + 1)):
            continue
        value = _value_at(doc.value, path)
        if isinstance(value, bool) and scalar.text not in BOOLEAN_SPELLINGS:
            problems.append(doc.problem(path, f"{_text(scalar)} is not accepted for a boolean "
                                              f"(YAML 1.1 reads it as {str(value).lower()}): write true or false"))
        elif isinstance(value, int) and not isinstance(value, bool) and not _DECIMAL.fullmatch(scalar.text):
            problems.append(doc.problem(path, f"{_text(scalar)} is read by YAML 1.1 as {how_read(scalar, value)}: "
                                              f"write {shown(value)} if that is meant"))
    return problems


def _value_at(value: object, path: JsonPath) -> object:
    for part in path:
        value = value[part]  # type: ignore[index]
    return value
