"""Stage 0 of manifest loading: which files to read, and their text within the size limit.

Files under a directory are read in the order of their sorted paths; hidden files and directories (`.git`,
`.#web.yaml`) and editor leftovers (`web.yaml~`, `*.swp`) are skipped, because
editors create and rename them while a user saves (RELIABILITY F14). A file named
explicitly is read whatever its suffix. Each file keeps the spelling the user gave
(`specs/web.yaml`, not an absolute path) for messages, and is read once even when
two of the given paths reach it.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from controller.errors import Problem

MAX_FILE_BYTES = 4 * 1024 * 1024
SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class ManifestFile:
    """One manifest file's text, read within the size limit but not yet parsed."""

    name: str        # as the user spelled it (the given path, joined with what lies below it)
    text: str


def is_manifest_name(name: str) -> bool:
    """A manifest file name: `*.yaml`/`*.yml`, not a dotfile (`.#web.yaml`, `.web.yaml.swp`)
    nor an editor's leftover (`web.yaml~`, `#web.yaml#`)."""
    return name.endswith(SUFFIXES) and not name.startswith((".", "#"))


def read_all(paths: Sequence[str]) -> tuple[list[ManifestFile], list[Problem]]:
    """The text of every manifest under `paths`, in order, and a finding per unreadable one."""
    files: list[ManifestFile] = []
    problems: list[Problem] = []
    seen: set[Path] = set()
    for name in _walk(paths, problems):
        try:
            real = Path(name).resolve()
        except (OSError, RuntimeError):          # a symlink loop: _read reports it
            real = Path(os.path.abspath(name))
        if real in seen:
            continue
        seen.add(real)
        text = _read(name, problems)
        if text is not None:
            files.append(ManifestFile(name, text))
    return files, problems


def _walk(paths: Sequence[str], problems: list[Problem]) -> Iterator[str]:
    def unreadable(exc: OSError) -> None:
        # A directory skipped in silence would look like deleted manifests: say so.
        problems.append(Problem(str(exc.filename), 0, "$", f"cannot read: {exc.strerror or exc}"))

    for given in paths:
        if os.path.isdir(given):
            found = []
            for top, dirs, names in os.walk(given, onerror=unreadable):
                dirs[:] = [d for d in dirs if not d.startswith(".")]
                found += [os.path.join(top, n) for n in names if is_manifest_name(n)]
            yield from sorted(found, key=lambda name: Path(name).parts)
        elif os.path.exists(given):
            yield given
        else:
            problems.append(Problem(given, 0, "$", "no such file or directory"))


def _read(name: str, problems: list[Problem]) -> str | None:
    """The file's text; the size is checked before any parsing (RELIABILITY B5)."""
    try:
        if not stat.S_ISREG(os.stat(name).st_mode):     # a FIFO would block the open below
            problems.append(Problem(name, 0, "$", "not a regular file"))
            return None
        with open(name, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            data = handle.read(MAX_FILE_BYTES + 1) if size <= MAX_FILE_BYTES else b""
    except OSError as exc:
        problems.append(Problem(name, 0, "$", f"cannot read: {exc.strerror or exc}"))
        return None
    return text_of(name, data, problems, size=size)


def text_of(name: str, data: bytes, problems: list[Problem], *, size: int | None = None) -> str | None:
    """A manifest's bytes as text, or None with the finding that says why not: over
    the size limit (`size`: what the file's length said, if more than was read), or
    not UTF-8."""
    size = len(data) if size is None else size
    if size > MAX_FILE_BYTES or len(data) > MAX_FILE_BYTES:
        problems.append(Problem(name, 0, "$", f"file is larger than the limit of "
                                f"{MAX_FILE_BYTES // (1024 * 1024)} MiB ({max(size, len(data))} bytes)"))
        return None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        problems.append(Problem(name, line, "$", f"not UTF-8 text (byte {data[exc.start]:#04x})"))
        return None
