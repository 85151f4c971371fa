"""Observation with a parse memo: what did not change is not parsed again, what changed
always is, and the memo holds only what the latest observation saw."""

from __future__ import annotations

import pytest

from controller import observe as observe_module
from controller.adapter import Libvirt
from controller.model import Kind, Ref
from controller.observe import ParseMemo, observe


@pytest.fixture
def client():  # type: ignore[no-untyped-def]
    with Libvirt("test:///default") as c:
        yield c


def test_an_unchanged_host_is_not_parsed_again_and_a_change_always_is(
        client: Libvirt, monkeypatch: pytest.MonkeyPatch) -> None:
    parsed: list[str] = []
    real = observe_module.vm_kind.parse
    monkeypatch.setattr(observe_module.vm_kind, "parse",
                        lambda root, **kw: parsed.append(root.findtext("name")) or real(root, **kw))
    conn = client._conn
    conn.defineXML("<domain type='test'><name>t-b</name><memory>2048</memory><os><type>hvm</type></os></domain>")
    memo = ParseMemo()

    first = observe(client, memo=memo)
    assert sorted(parsed) == ["t-b", "test", "test"]      # a running domain: its definition and live XML
    parsed.clear()
    again = observe(client, memo=memo)
    assert parsed == [] and again.objects == first.objects

    uuid = conn.lookupByName("t-b").UUIDString()
    conn.defineXML(f"<domain type='test'><name>t-b</name><uuid>{uuid}</uuid><memory>4096</memory>"
                   "<os><type>hvm</type></os></domain>")
    changed = observe(client, memo=memo)
    assert parsed == ["t-b"]
    assert changed.objects[Ref(Kind.VM, "t-b")].spec.memory == 4096 << 10

    held = len(memo)
    conn.lookupByName("t-b").undefine()
    observe(client, memo=memo)
    assert len(memo) == held - 1          # t-b's definition is dropped with t-b
    observe(client, memo=memo)
    assert len(memo) == held - 1          # and passes over the same host do not grow it
