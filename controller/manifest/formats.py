"""The `format`s the manifest schemas use, checked for real (RELIABILITY B7).

jsonschema only annotates `format` unless a FormatChecker is given, and its own
`hostname` check silently passes without an optional package, so every format the
schemas name is implemented here, with `ipaddress` for addresses. Each check
raises ValueError with the human message that `schema` shows for that field.
Used by stage 2 (`schema`); `explain` is also how `schema` words a failing
`pattern` / `maxLength` on a field that has a format.
"""

from __future__ import annotations

import functools
import ipaddress
import posixpath
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from controller.manifest.located import shown
from controller.units import format_size, parse_size

if TYPE_CHECKING:
    from jsonschema import FormatChecker

NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
NAME_MAX = 63
_MAC = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")
_DOTTED_QUAD = re.compile(r"[0-9]{1,3}(\.[0-9]{1,3}){3}")
_CIDR = re.compile(r"[0-9]{1,3}(\.[0-9]{1,3}){3}/[0-9]{1,2}")
_DNS_LABEL = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?")
_LABEL_KEY = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")
_LABEL_MAX = 63
_IFNAME_MAX = 15                      # IFNAMSIZ - 1


def resource_name(value: object) -> None:
    if not isinstance(value, str):
        return
    if len(value) > NAME_MAX:
        raise ValueError(f"{shown(value[:20] + '...')} is {len(value)} characters long; a name has at most {NAME_MAX}")
    if not NAME.fullmatch(value):
        raise ValueError(f"{shown(value)} is not a valid name: use lower-case letters, digits and '-', "
                         "starting and ending with a letter or digit")


MIN_MEMORY = 16 * 1024 * 1024


def _bytes(value: object) -> int | None:
    """The size in bytes; parse_size's own ValueError says what a size looks like."""
    if isinstance(value, str) and value != value.strip():     # parse_size would forgive it, the pattern not
        raise ValueError(f"{shown(value)} has spaces around it")
    if isinstance(value, (int, str)) and not isinstance(value, bool):
        return parse_size(value)
    return None                   # not a size at all: the schema's `type` reports it


# Disk images are made of 512-byte sectors (qemu rounds other sizes up, which would
# then read back as a different size); libvirt keeps memory in KiB. Sizes that do not
# fit would never compare equal to what the host reports, so they are refused here.
SECTOR = 512
KIB = 1024


def disk_size(value: object) -> None:
    size = _bytes(value)
    if size == 0:
        raise ValueError(f"must be greater than 0 (got {shown(value)})")
    if size is not None and size % SECTOR:
        raise ValueError(f"{shown(value)} is not a whole number of 512-byte sectors")


def memory_size(value: object) -> None:
    size = _bytes(value)
    if size is not None and size < MIN_MEMORY:
        raise ValueError(f"{shown(value)} is less than the minimum of {format_size(MIN_MEMORY)}")
    if size is not None and size % KIB:
        raise ValueError(f"{shown(value)} is not a whole number of KiB")


def mac_address(value: object) -> None:
    if not isinstance(value, str):
        return
    if not _MAC.fullmatch(value):
        raise ValueError(f"{shown(value)} is not a MAC address (six hex pairs separated by ':', "
                         "e.g. 52:54:00:12:34:56)")
    if int(value[:2], 16) & 1:
        raise ValueError(f"{shown(value)} is a multicast MAC address (lowest bit of the first octet set); "
                         "a NIC needs a unicast address such as 52:54:00:12:34:56")


def ipv4(value: object) -> None:
    if not isinstance(value, str):
        return
    try:
        if not _DOTTED_QUAD.fullmatch(value):
            raise ValueError
        ipaddress.IPv4Address(value)
    except ValueError:
        raise ValueError(f"{shown(value)} is not an IPv4 address") from None


def ipv4_cidr(value: object) -> None:
    if not isinstance(value, str):
        return
    if not _CIDR.fullmatch(value):
        raise ValueError(f"{shown(value)} is not an IPv4 network (address/prefix, e.g. 10.10.0.0/24)")
    try:
        ipaddress.IPv4Network(value, strict=True)
    except ValueError as exc:
        if "host bits set" not in str(exc):
            raise ValueError(f"{shown(value)} is not an IPv4 network ({exc})") from None
        network = ipaddress.IPv4Network(value, strict=False)
        raise ValueError(f"{shown(value)} has host bits set; the network is {network}") from None


def absolute_path(value: object) -> None:
    if not isinstance(value, str):
        return
    if not value.startswith("/"):
        raise ValueError(f"{shown(value)} is not an absolute path")
    if any(ord(c) < 32 or c == "\x7f" for c in value):
        raise ValueError(f"{shown(value)} contains control characters")
    parts = value.split("/")
    if ".." in parts or "." in parts or "//" in value or (value != "/" and value.endswith("/")):
        raise ValueError(f"{shown(value)} is not a normalised path (no '.', '..', '//' or trailing '/'; "
                         f"did you mean {shown(posixpath.normpath(value))}?)")


def interface_name(value: object) -> None:
    """Linux's rule (dev_valid_name), restricted to printable ASCII."""
    if not isinstance(value, str):
        return
    if not value or len(value) > _IFNAME_MAX:
        raise ValueError(f"{shown(value)} is not a network interface name (1 to {_IFNAME_MAX} characters)")
    if value in (".", "..") or any(c in "/:" or not c.isascii() or not c.isprintable() or c.isspace()
                                   for c in value):
        raise ValueError(f"{shown(value)} is not a network interface name "
                         "(no '/', ':', spaces or non-ASCII characters)")


def hostname(value: object) -> None:
    if not isinstance(value, str):
        return
    labels = value.split(".")
    if len(value) > 253 or not all(len(label) <= 63 and _DNS_LABEL.fullmatch(label) for label in labels):
        raise ValueError(f"{shown(value)} is not a DNS name (dot-separated labels of letters, digits and '-', "
                         "at most 63 characters each)")


def label_key(value: object) -> None:
    if isinstance(value, str) and (len(value) > _LABEL_MAX or not _LABEL_KEY.fullmatch(value)):
        raise ValueError(f"label key {shown(value)} is not valid: at most {_LABEL_MAX} letters, digits, "
                         "'-', '_', '.' and '/', starting and ending with a letter or digit")


def label_value(value: object) -> None:
    if isinstance(value, str) and (len(value) > _LABEL_MAX or not _LABEL_VALUE.fullmatch(value)):
        raise ValueError(f"label value {shown(value)} is not valid: at most {_LABEL_MAX} letters, digits, "
                         "'-', '_' and '.', starting and ending with a letter or digit")


CHECKS: dict[str, Callable[[object], None]] = {
    "resource-name": resource_name,
    "disk-size": disk_size,
    "memory-size": memory_size,
    "mac-address": mac_address,
    "ipv4": ipv4,
    "ipv4-cidr": ipv4_cidr,
    "absolute-path": absolute_path,
    "interface-name": interface_name,
    "hostname": hostname,
    "label-key": label_key,
    "label-value": label_value,
}


def checker() -> FormatChecker:
    """A FormatChecker that knows exactly the formats above."""
    from jsonschema import FormatChecker

    format_checker = FormatChecker(formats=())
    for name, check in CHECKS.items():
        format_checker.checks(name, raises=ValueError)(_passing(check))
    return format_checker


def _passing(check: Callable[[object], None]) -> Callable[[object], bool]:
    """FormatChecker wants True for valid values; ours raise or return None."""

    def run(value: object) -> bool:
        check(value)
        return True

    return run


@functools.cache
def predicates() -> dict[str, Callable[[object], bool]]:
    """The checks as the compiled schema checks call them: True for a valid value."""
    return {name: functools.partial(_holds, check) for name, check in CHECKS.items()}


def _holds(check: Callable[[object], None], value: object) -> bool:
    try:
        check(value)
    except ValueError:
        return False
    return True


def explain(format_name: str, value: object) -> str | None:
    """Why `value` is not a valid `format_name`, or None when it is (or the format is unknown)."""
    check = CHECKS.get(format_name)
    if check is None:
        return None
    try:
        check(value)
    except ValueError as exc:
        return str(exc)
    return None
