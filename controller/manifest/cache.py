"""A cache of loaded manifests, keyed by the exact bytes of every file.

Loading validates every document against its schema: most of a no-op `plan` or a
daemon pass over unchanged files. The result of the last load is kept in the state
directory (0700, root's) with a key made of the package version, the schemas, the
paths given and the content of every manifest file; any difference in any byte
loads afresh. Invalid manifests are never cached: their errors are always reported.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from controller import __version__, filecache
from controller.digest import blake2b
from controller.manifest import load
from controller.manifest.files import read_all
from controller.model import Desired
from controller.resources import data_dir

CACHE_FILE = "manifests.cache"


def load_cached(paths: Sequence[str], *, cache_dir: str | os.PathLike[str], partial: bool = False) -> Desired:
    """`partial` allows references to objects the files do not declare (`delete -f` of
    one file of a stack). A complete load is also a valid partial one, so that
    `delete -f` after `apply -f` of the same files is a hit; not the other way round."""
    key, path, desired = _lookup(paths, cache_dir=cache_dir, partial=partial)
    if desired is not None:
        return desired
    desired = load(paths, partial=partial)
    desired.hashes    # noqa: B018 - computed now, so that the cache keeps them too
    desired.by_ref()  # the same for the index by reference
    _last[path] = (key, (partial, desired))
    if not filecache.write(path, key, (partial, desired)):
        _unsaved[path] = _last[path]
    return desired


def cached(paths: Sequence[str], *, cache_dir: str | os.PathLike[str], partial: bool = False) -> Desired | None:
    """What load_cached would give without loading anything: None if it would load."""
    return _lookup(paths, cache_dir=cache_dir, partial=partial)[2]


def _lookup(paths: Sequence[str], *, cache_dir: str | os.PathLike[str],
            partial: bool) -> tuple[str, Path, Desired | None]:
    key = _key(paths)
    path = Path(cache_dir) / CACHE_FILE
    cached = _last.get(path)             # a daemon's passes: the same process, nothing to unpickle
    if cached is None or cached[0] != key:
        found = filecache.read(path, key)
        cached = (key, found) if found is not None else None
    if cached is not None and isinstance(cached[1], tuple) and len(cached[1]) == 2 \
            and isinstance(cached[1][1], Desired) and (partial or not cached[1][0]):
        _last[path] = cached
        return key, path, cached[1][1]
    return key, path, None


def unsaved() -> dict[Path, tuple[str, tuple[bool, Desired]]]:
    """The loads not kept yet (see save_unsaved): a child process that loaded for its
    parent (cli/preload.py) hands them over with what it loaded."""
    return dict(_unsaved)


def keep_unsaved(loads: dict[Path, tuple[str, tuple[bool, Desired]]]) -> None:
    _unsaved.update(loads)


def save_unsaved() -> None:
    """Keep the loads made before their state directory existed (a first `apply`
    loads its manifests before it creates the directory), now that it does."""
    for path, (key, value) in list(_unsaved.items()):
        if filecache.write(path, key, value):
            del _unsaved[path]


# The last load per cache file in this process: (key, (partial, desired)).
_last: dict[Path, tuple[str, tuple[bool, Desired]]] = {}
_unsaved: dict[Path, tuple[str, tuple[bool, Desired]]] = {}


def _key(paths: Sequence[str]) -> str:
    digest = blake2b(digest_size=32)
    digest.update(f"{__version__}\0{list(paths)}\0".encode())
    digest.update("\0".join(str(Path(p).resolve()) for p in paths).encode())
    schemas = data_dir("schemas", env="IAASCTL_SCHEMAS")
    for schema in sorted(schemas.glob("*.json")):
        digest.update(schema.read_bytes())
    files, problems = read_all(paths)
    for file in files:
        digest.update(f"\0{file.name}\0".encode() + blake2b(file.text.encode(), digest_size=32).digest())
    for problem in problems:      # an unreadable file is part of what was seen
        digest.update(str(problem).encode())
    return digest.hexdigest()
