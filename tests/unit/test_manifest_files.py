"""Which files `load` reads (RELIABILITY F14: editors' temporary files), in what order,
and how they are named in findings."""

from __future__ import annotations

import os
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


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file_is_a_finding(tmp_path: Path) -> None:
    write(tmp_path, "secret.yaml", POOL.format(name="s"))
    (tmp_path / "secret.yaml").chmod(0)
    with pytest.raises(ManifestInvalid, match="cannot read: Permission denied"):
        load([str(tmp_path / "secret.yaml")])


def test_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    (tmp_path / "bom.yaml").write_bytes(b"\xef\xbb\xbf" + POOL.format(name="bom").encode())
    assert [s.meta.name for s in load([str(tmp_path / "bom.yaml")]).specs] == ["bom"]
