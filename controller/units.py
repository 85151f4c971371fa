"""Sizes: manifest spelling (`512MiB`, `10GiB`, bytes) to integers of bytes and back."""

from __future__ import annotations

import re

_UNITS = {"": 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}
_SIZE = re.compile(r"^([0-9]+)\s*(B|KiB|MiB|GiB|TiB)?$")

# The same pattern, for the JSON Schemas (kept here so both agree).
SIZE_PATTERN = r"^[0-9]+\s*(B|KiB|MiB|GiB|TiB)?$"


def parse_size(value: int | str) -> int:
    """Bytes from an integer or a binary-unit string; ValueError says what is accepted."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a size")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value} is negative")
        return value
    match = _SIZE.match(value.strip())
    if not match:
        raise ValueError(f"{value!r} is not a size (use binary units such as 512MiB or 10GiB, or bytes)")
    return int(match.group(1)) * _UNITS[match.group(2) or ""]


def format_size(size: int) -> str:
    """The shortest exact binary-unit spelling: 2147483648 -> '2GiB'."""
    for unit in ("TiB", "GiB", "MiB", "KiB"):
        factor = _UNITS[unit]
        if size and size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size}B"
