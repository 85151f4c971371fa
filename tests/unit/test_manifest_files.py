"""Which files `load` reads (RELIABILITY F14: editors' temporary files), in what order,
and how they are named in findings."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from controller.errors import ManifestInvalid, Problem
from controller.manifest import files, load

POOL = "apiVersion: iaas/v1\nkind: StoragePool\nmetadata:\n  name: {name}\nspec:\n  path: /srv/{name}\n"
GARBAGE = "{{{ not yaml at all"


def write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_editor_files_and_dotfiles_are_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "specs/b.yaml", POOL.format(name="b"))
    write(tmp_path, "specs/a.yml", POOL.format(name="a"))
    write(tmp_path, "specs/sub/c.yaml", POOL.format(name="c"))
    write(tmp_path, "specs/aa/d.yaml", POOL.format(name="d"))
    for leftover in ("b.yaml~", ".b.yaml.swp", ".#b.yaml", "#b.yaml#", ".hidden.yaml", "notes.txt",
                     ".git/config.yaml", ".cache/x.yml", "b.yaml.swp"):
        write(tmp_path, f"specs/{leftover}", GARBAGE)
    monkeypatch.chdir(tmp_path)
    desired = load(["specs"])
    assert [(s.meta.name, s.meta.source.file) for s in desired.specs] == [
        ("a", "specs/a.yml"), ("d", "specs/aa/d.yaml"), ("b", "specs/b.yaml"), ("c", "specs/sub/c.yaml")]
    assert desired.roots == (str(tmp_path / "specs"),)


@pytest.mark.parametrize("name, wanted", [
    ("web.yaml", True), ("web.yml", True), ("web.yaml~", False), (".web.yaml.swp", False),
    (".#web.yaml", False), ("#web.yaml#", False), (".web.yaml", False), ("web.json", False),
])
def test_manifest_names(name: str, wanted: bool) -> None:
    assert files.is_manifest_name(name) is wanted


def test_a_file_named_explicitly_is_read_whatever_its_name(tmp_path: Path) -> None:
    write(tmp_path, "pool.txt", POOL.format(name="p"))
    assert [s.meta.name for s in load([str(tmp_path / "pool.txt")]).specs] == ["p"]


def test_a_file_reached_twice_is_read_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "specs/p.yaml", POOL.format(name="p"))
    monkeypatch.chdir(tmp_path)
    desired = load(["specs/p.yaml", "specs", "./specs/../specs/p.yaml"])
    assert [s.meta.source.file for s in desired.specs] == ["specs/p.yaml"]
    assert len(desired.roots) == 3


def test_empty_inputs(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    write(tmp_path, "blank.yaml", "")
    write(tmp_path, "comments.yaml", "# nothing yet\n---\n...\n")
    assert load([]).specs == ()
    assert load([str(tmp_path / "empty"), str(tmp_path / "blank.yaml"), str(tmp_path / "comments.yaml")]).specs == ()


def test_missing_and_special_paths_are_findings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    os.mkfifo(tmp_path / "pipe.yaml")
    write(tmp_path, "ok.yaml", POOL.format(name="ok"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ManifestInvalid) as caught:
        load(["nowhere.yaml", "pipe.yaml", "ok.yaml"])
    assert caught.value.problems == [
        Problem("nowhere.yaml", 0, "$", "no such file or directory"),
        Problem("pipe.yaml", 0, "$", "not a regular file"),
    ]


def test_unreadable_file_is_a_finding() -> None:
    """Root reads any file whatever its mode, so the load runs in a child that drops to
    an unprivileged user first (when the tests are not root, chmod alone does it). The
    directory is one that user may enter; pytest's own tmp_path is private to root."""
    tmp_path = Path(tempfile.mkdtemp(prefix="iaasctl-unreadable-"))
    tmp_path.chmod(0o711)
    write(tmp_path, "secret.yaml", POOL.format(name="s"))
    (tmp_path / "secret.yaml").chmod(0)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report the problems through the pipe, never return into pytest
        try:
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            try:
                load([str(tmp_path / "secret.yaml")])
                os.write(write_end, b"loaded")
            except ManifestInvalid as exc:
                os.write(write_end, str(exc).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    with os.fdopen(read_end) as pipe:
        report = pipe.read()
    shutil.rmtree(tmp_path)
    assert report == f"{tmp_path / 'secret.yaml'}:0: $: cannot read: Permission denied"


def test_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    (tmp_path / "bom.yaml").write_bytes(b"\xef\xbb\xbf" + POOL.format(name="bom").encode())
    assert [s.meta.name for s in load([str(tmp_path / "bom.yaml")]).specs] == ["bom"]


def test_unreadable_directory_is_a_finding_not_a_silent_gap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A skipped directory would look like deleted manifests. (os.scandir is made to
    refuse, as chmod cannot stop root.)"""
    write(tmp_path, "specs/locked/p.yaml", POOL.format(name="p"))
    write(tmp_path, "specs/q.yaml", POOL.format(name="q"))
    real_scandir = os.scandir

    def scandir(path: str) -> object:
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(ManifestInvalid) as caught:
        load([str(tmp_path / "specs")])
    assert [str(p) for p in caught.value.problems] == [f"{tmp_path}/specs/locked:0: $: cannot read: Permission denied"]


def test_symlink_loop_is_a_finding(tmp_path: Path) -> None:
    (tmp_path / "loop.yaml").symlink_to(tmp_path / "loop.yaml")
    with pytest.raises(ManifestInvalid) as caught:
        load([str(tmp_path)])
    assert [p.message for p in caught.value.problems] == ["cannot read: Too many levels of symbolic links"]


def test_the_manifest_cache_is_keyed_by_every_byte(tmp_path: Path) -> None:
    """A second load of unchanged files comes from the cache; a one-byte edit, a new
    file or an invalid file loads afresh (and an invalid one is never cached)."""
    from controller.manifest import cache

    specs, state = tmp_path / "specs", tmp_path / "state"
    state.mkdir()
    write(specs, "p.yaml", POOL.format(name="a"))
    first = cache.load_cached([str(specs)], cache_dir=state / "cache")
    assert (state / "cache" / cache.CACHE_FILE).stat().st_mode & 0o777 == 0o600
    assert cache.load_cached([str(specs)], cache_dir=state / "cache") == first
    write(specs, "p.yaml", POOL.format(name="b"))
    assert [s.meta.name for s in cache.load_cached([str(specs)], cache_dir=state / "cache").specs] == ["b"]
    write(specs, "q.yaml", "kind: Nonsense\n")
    with pytest.raises(ManifestInvalid):
        cache.load_cached([str(specs)], cache_dir=state / "cache")
    with pytest.raises(ManifestInvalid):
        cache.load_cached([str(specs)], cache_dir=state / "cache")
    (state / "cache" / cache.CACHE_FILE).write_bytes(b"garbage")
    (specs / "q.yaml").unlink()
    assert [s.meta.name for s in cache.load_cached([str(specs)], cache_dir=state / "cache").specs] == ["b"]


def test_a_complete_load_in_the_cache_serves_a_partial_one_not_the_reverse(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`delete -f` after `apply -f` of the same files reads the cache; a cached partial
    load (references to undeclared objects allowed) never stands in for a complete one."""
    from controller.manifest import cache

    specs, state = tmp_path / "specs", tmp_path / "state"
    state.mkdir()
    write(specs, "p.yaml", POOL.format(name="a"))
    loads = []
    real_load = cache.load
    monkeypatch.setattr(cache, "load", lambda *a, **k: loads.append(k) or real_load(*a, **k))
    complete = cache.load_cached([str(specs)], cache_dir=state / "cache")
    assert cache.load_cached([str(specs)], cache_dir=state / "cache", partial=True) == complete
    assert loads == [{"partial": False}]

    write(specs, "v.yaml", "apiVersion: iaas/v1\nkind: Volume\nmetadata:\n  name: v\n"
                           "spec:\n  pool: elsewhere\n  size: 1GiB\n")
    assert len(cache.load_cached([str(specs)], cache_dir=state / "cache", partial=True).specs) == 2
    with pytest.raises(ManifestInvalid, match="elsewhere"):
        cache.load_cached([str(specs)], cache_dir=state / "cache")
    assert loads == [{"partial": False}, {"partial": True}, {"partial": False}]


def test_a_load_made_before_the_state_directory_existed_is_kept_once_it_does(tmp_path: Path) -> None:
    """A first `apply` loads its manifests before it creates the state directory: the
    load is kept once the directory is there, so the next command reads the cache."""
    from controller import filecache
    from controller.manifest import cache

    specs, state = tmp_path / "specs", tmp_path / "state"
    write(specs, "p.yaml", POOL.format(name="a"))
    loaded = cache.load_cached([str(specs)], cache_dir=state / "cache")
    assert not state.exists(), "a cache never creates the state directory"
    state.mkdir()
    cache.save_unsaved()
    assert filecache.read(state / "cache" / cache.CACHE_FILE, cache._key([str(specs)])) == (False, loaded)
