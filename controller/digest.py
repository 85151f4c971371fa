"""blake2b without `hashlib`, whose import loads OpenSSL first (`_hashlib`, with
libcrypto: 3-4 ms of every command, and nothing else in a command loads OpenSSL;
libvirt uses GnuTLS). hashlib's own blake2b is this same function from CPython's
`_blake2`; where that module is missing, hashlib's is used."""

from __future__ import annotations

try:
    from _blake2 import blake2b
except ImportError:  # pragma: no cover - an interpreter without CPython's module
    from hashlib import blake2b

__all__ = ["blake2b"]
