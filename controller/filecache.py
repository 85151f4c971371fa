"""Content-keyed caches in the state directory's `cache/` (0700, root's).

Each cache file keeps one value with the key it was made from: the loaded
manifests (manifest/cache.py), the parsed configuration file (config.py). A
different key, a truncated or foreign file is a miss, never an error; a cache that
cannot be written only costs speed. Writes are atomic (write, then rename).
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any


def read(path: Path, key: str) -> Any | None:
    """The value stored under `key` at `path`, or None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        with os.fdopen(fd, "rb") as handle:
            # Only root writes this file, in root's 0700 state directory.
            stored = pickle.load(handle)  # noqa: S301
    except Exception:  # a truncated or foreign cache is simply a miss
        return None
    if isinstance(stored, tuple) and len(stored) == 2 and stored[0] == key:
        return stored[1]
    return None


def write(path: Path, key: str, value: Any) -> bool:
    """Keep `value` under `key`, if the state directory (path's grandparent) exists:
    a cache never creates it. Whether it was kept."""
    if not path.parent.parent.is_dir():
        return False
    try:
        path.parent.mkdir(mode=0o700, exist_ok=True)
    except OSError:
        return False
    return replace_file(path, pickle.dumps((key, value), protocol=pickle.HIGHEST_PROTOCOL), mode=0o600)


def replace_file(path: Path, data: bytes, *, mode: int) -> bool:
    """Put `data` at `path` whole or not at all (a temporary file, then a rename);
    whether it was written. What a failed attempt left is removed."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass  # never made, or already gone: nothing left behind either way
        return False
    return True
