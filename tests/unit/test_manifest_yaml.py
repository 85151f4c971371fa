"""Defensive YAML reading (RELIABILITY B1-B5): limits that need generated input, and
proofs about *how* a hostile file is rejected, not only *that* it is."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.errors import ManifestInvalid
from controller.manifest import files, load, yamlsafe

VM = """apiVersion: iaas/v1
kind: VirtualMachine
metadata:
  name: {name}
spec:
  vcpus: 1
  memory: 1GiB
  autostart: {autostart}
  networks:
    - network: lab
      mac: {mac}
---
apiVersion: iaas/v1
kind: Network
metadata:
  name: lab
spec:
  mode: isolated
"""


def bomb(levels: int) -> str:
    lines = ['l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def problems_of(tmp_path: Path, text: str | bytes, name: str = "m.yaml") -> list[str]:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    with pytest.raises(ManifestInvalid) as caught:
        load([str(path)])
    return [f"{p.line}: {p.path}: {p.message}" for p in caught.value.problems]


def test_alias_bomb_is_refused_without_expanding_anything(monkeypatch: pytest.MonkeyPatch) -> None:
    """Timing-free: a 30-level bomb (9**30 strings if expanded) is read as a bounded
    number of parser events, no more than the text holds, and no document is built."""
    text = bomb(30)
    total_events = sum(1 for _ in yaml.parse(text, Loader=yaml.SafeLoader))
    pulled = 0
    real_parse = yaml.parse

    def counting_parse(stream: str, Loader: Any) -> Iterator[yaml.Event]:
        nonlocal pulled
        for event in real_parse(stream, Loader=Loader):
            pulled += 1
            yield event

    monkeypatch.setattr(yaml, "parse", counting_parse)
    documents, problems = yamlsafe.read_documents(text, "bomb.yaml")
    assert documents == []
    assert [str(p) for p in problems] == [
        "bomb.yaml:1: l0: anchors and aliases are not allowed (found &l0); write the value out"]
    assert 0 < pulled <= total_events


def test_short_bomb_from_the_checklist_is_refused(tmp_path: Path) -> None:
    text = bomb(7)
    assert len(text) < 400
    assert problems_of(tmp_path, text) == ["1: l0: anchors and aliases are not allowed (found &l0); write the value out"]


def test_size_limit_is_checked_before_parsing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_parsing(*args: object, **kwargs: object) -> None:
        raise AssertionError("parsed a file over the size limit")

    monkeypatch.setattr(yaml, "parse", no_parsing)
    big = b"# padding\n" * (files.MAX_FILE_BYTES // 10) + b"# over\n"
    assert len(big) > files.MAX_FILE_BYTES
    assert problems_of(tmp_path, big) == [
        f"0: $: file is larger than the limit of 4 MiB ({len(big)} bytes)"]


def test_a_file_at_the_size_limit_is_read(tmp_path: Path) -> None:
    doc = VM.format(name="web-1", autostart="false", mac='"52:54:00:00:00:01"').encode()
    padding = files.MAX_FILE_BYTES - len(doc) - 1
    (tmp_path / "m.yaml").write_bytes(doc + b"#" * padding + b"\n")
    assert (tmp_path / "m.yaml").stat().st_size == files.MAX_FILE_BYTES
    assert len(load([str(tmp_path / "m.yaml")]).specs) == 2


@pytest.mark.parametrize("text", [
    "spec: " + "[" * 10_000 + "]" * 10_000 + "\n",
    "spec: " + "{a: " * 10_000 + "x" + "}" * 10_000 + "\n",
    "- " * 10_000 + "x\n",
], ids=["flow-list", "flow-mapping", "block-list"])
def test_ten_thousand_levels_are_refused_cleanly(tmp_path: Path, text: str) -> None:
    """Ours or libyaml's own flow-level limit (its scanner looks ahead over a flow
    collection) answers first; either way one finding, no RecursionError."""
    (problem,) = problems_of(tmp_path, text)
    assert problem.endswith(("nested more than 64 levels deep", "exceeded maximum nesting depth")), problem


def test_depth_limit_boundary() -> None:
    ok, ok_problems = yamlsafe.read_documents("[" * 64 + "]" * 64, "d.yaml")
    assert ok_problems == [] and len(ok) == 1
    _, problems = yamlsafe.read_documents("[" * 65 + "]" * 65, "d.yaml")
    assert [p.message for p in problems] == ["nested more than 64 levels deep"]


def test_a_million_item_list_is_refused_by_the_node_limit(tmp_path: Path) -> None:
    text = "spec: [" + "0," * 1_000_000 + "0]\n"
    assert len(text) < files.MAX_FILE_BYTES
    assert problems_of(tmp_path, text) == ["1: $: more than 200000 values in one file"]


def test_duplicate_keys_in_flow_and_quoted_spelling(tmp_path: Path) -> None:
    text = 'apiVersion: iaas/v1\nkind: StoragePool\nmetadata: {name: a, "name": b}\nspec: {path: /srv}\n'
    assert problems_of(tmp_path, text) == ["3: metadata.name: duplicate key 'name' (lines 3 and 3)"]


@pytest.mark.parametrize("text", [
    "!!python/object/apply:os.system ['true']\n",
    "a: !!python/object/new:subprocess.Popen [['true']]\n",
    "a: !!python/name:builtins.eval\n",
    "a: !!set {x, y}\n",
    "a: !!omap [{x: 1}]\n",
])
def test_unsafe_tags_are_findings_not_tracebacks(tmp_path: Path, text: str) -> None:
    assert any("is not allowed" in problem for problem in problems_of(tmp_path, text))


def test_huge_integer_literal_is_a_finding(tmp_path: Path) -> None:
    text = VM.format(name="web-1", autostart="false", mac='"52:54:00:00:00:01"').replace(
        "vcpus: 1", "vcpus: " + "9" * 5000)
    (problem,) = problems_of(tmp_path, text)
    assert problem.startswith("6: spec.vcpus: ")


# RELIABILITY B4, over the literals: unquoted, each is a finding that says to quote it;
# quoted, the same text is no YAML finding.
SEXAGESIMAL_MAC = st.lists(st.integers(0, 59), min_size=3, max_size=3).map(
    lambda octets: "52:54:00:" + ":".join(f"{o:02d}" for o in octets))
TRAPS = st.sampled_from(["no", "No", "NO", "yes", "off", "on", "true", "False", "0755", "1.10", "22:22",
                         "010", "0x1f", "2024-01-31", "~", "null", "12"])


@settings(max_examples=40, deadline=None)
@given(mac=SEXAGESIMAL_MAC)
def test_unquoted_sexagesimal_mac_says_quote_it(mac: str) -> None:
    text = VM.format(name="web-1", autostart="false", mac=mac)
    _, problems = yamlsafe.read_documents(text, "m.yaml")
    assert problems == []
    with_files = _load_text(text)
    assert any(f'quote it: "{mac}"' in line for line in with_files), with_files
    assert _load_text(VM.format(name="web-1", autostart="false", mac=f'"{mac}"')) == []


@settings(max_examples=40, deadline=None)
@given(literal=TRAPS)
def test_unquoted_trap_as_a_name_says_how_it_was_read(literal: str) -> None:
    got = _load_text(VM.format(name=literal, autostart="false", mac='"52:54:00:00:00:01"'))
    assert len(got) == 1 and "metadata.name" in got[0]
    if literal != "~" and literal != "null":
        assert f'quote it: "{literal}"' in got[0], got


@settings(max_examples=40, deadline=None)
@given(word=st.sampled_from(["yes", "no", "on", "off", "y", "n"]).flatmap(
    lambda w: st.tuples(*[st.sampled_from([c.lower(), c.upper()]) for c in w]).map("".join)))
def test_booleans_other_than_true_or_false_are_refused(word: str) -> None:
    got = _load_text(VM.format(name="web-1", autostart=word, mac='"52:54:00:00:00:01"'))
    assert len(got) == 1 and "spec.autostart" in got[0] and "write true or false" in got[0], got


def _load_text(text: str) -> list[str]:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.yaml"
        path.write_text(text)
        try:
            load([str(path)])
        except ManifestInvalid as exc:
            return [f"{p.line}: {p.path}: {p.message}" for p in exc.problems]
    return []


def test_a_forbidden_character_is_located_after_non_ascii_text(tmp_path: Path) -> None:
    assert problems_of(tmp_path, "a: ééééééééééé\nb: x\nc: \x07\n") == [
        "3: $: invalid YAML: control characters are not allowed (character U+0007)"]
