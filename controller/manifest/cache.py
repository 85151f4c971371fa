"""A cache of loaded manifests, keyed by the exact bytes of every file.

Loading validates every document against its schema: most of a no-op `plan` or a
daemon pass over unchanged files. The result of the last load is kept in the state
directory (0700, root's) with a key made of the package version, the schemas, the
paths given and the content of every manifest file; any difference in any byte
loads afresh. Invalid manifests are never cached: their errors are always reported.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
from collections.abc import Sequence
from pathlib import Path

from controller import __version__
from controller.manifest import load
from controller.manifest.files import read_all
from controller.model import Desired
from controller.resources import data_dir

CACHE_FILE = "manifests.cache"


def load_cached(paths: Sequence[str], *, cache_dir: str | os.PathLike[str], partial: bool = False) -> Desired:
    key = _key(paths, partial)
    path = Path(cache_dir) / CACHE_FILE
    cached = _read(path)
    if cached is not None and cached[0] == key:
        return cached[1]
    desired = load(paths, partial=partial)
    desired.hashes    # noqa: B018 - computed now, so that the cache keeps them too
    _write(path, (key, desired))
    return desired


def _key(paths: Sequence[str], partial: bool) -> str:
    digest = hashlib.sha256()
    digest.update(f"{__version__}\0{partial}\0{list(paths)}\0".encode())
    digest.update("\0".join(str(Path(p).resolve()) for p in paths).encode())
    schemas = data_dir("schemas", env="IAASCTL_SCHEMAS")
    for schema in sorted(schemas.glob("*.json")):
        digest.update(schema.read_bytes())
    files, problems = read_all(paths)
    for file in files:
        digest.update(f"\0{file.name}\0".encode() + hashlib.sha256(file.text.encode()).digest())
    for problem in problems:      # an unreadable file is part of what was seen
        digest.update(str(problem).encode())
    return digest.hexdigest()


def _read(path: Path) -> tuple[str, Desired] | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        with os.fdopen(fd, "rb") as handle:
            # Only root writes this file, in root's 0700 state directory.
            value = pickle.load(handle)  # noqa: S301
    except Exception:  # a truncated or foreign cache is simply a miss
        return None
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], Desired):
        return value
    return None


def _write(path: Path, value: tuple[str, Desired]) -> None:
    if not path.parent.parent.is_dir():   # no state directory yet: nothing to keep it in
        return
    try:
        path.parent.mkdir(mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".manifests-")
        with os.fdopen(fd, "wb") as handle:
            pickle.dump(value, handle, protocol=pickle.HIGHEST_PROTOCOL)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except OSError:
        return  # a cache that cannot be written only costs speed
