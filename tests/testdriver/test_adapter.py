"""The adapter maps libvirt's errors by code to our own exceptions, with the original chained."""

from __future__ import annotations

import threading

import libvirt
import pytest

from controller import errors
from controller.adapter import Libvirt


@pytest.fixture
def client():  # type: ignore[no-untyped-def]
    with Libvirt("test:///default") as c:
        yield c


def test_missing_objects_are_not_found(client: Libvirt) -> None:
    with pytest.raises(errors.NotFound) as caught:
        client.start_domain("no-such-domain")
    assert isinstance(caught.value.__cause__, libvirt.libvirtError)
    assert caught.value.code == libvirt.VIR_ERR_NO_DOMAIN
    with pytest.raises(errors.NotFound):
        client.start_network("no-such-network")
    with pytest.raises(errors.NotFound):
        client.volume_path("default-pool", "no-such-volume")


def test_invalid_definitions_are_permanent(client: Libvirt) -> None:
    with pytest.raises(errors.InvalidForHost) as caught:
        client.define_domain("<domain type='test'><name>a/b</name><memory>1024</memory>"
                             "<os><type>hvm</type></os></domain>")
    assert not caught.value.transient


def test_stopping_a_stopped_domain_is_operation_invalid(client: Libvirt) -> None:
    client.destroy_domain("test")
    with pytest.raises(errors.OperationInvalid):
        client.destroy_domain("test")


def test_a_closed_connection_is_a_transient_disconnect(client: Libvirt) -> None:
    client._conn.close()
    with pytest.raises(errors.Disconnected) as caught:
        client.domains()
    assert caught.value.transient


def test_only_mutating_calls_are_counted(client: Libvirt) -> None:
    client.domains()
    client.networks()
    client.pools()
    client.host()
    assert client.mutations == 0
    client.destroy_domain("test")
    assert client.mutations == 1


def test_observation_reads_states_and_flags_in_batches(client: Libvirt, monkeypatch: pytest.MonkeyPatch) -> None:
    """Active, persistent, autostart and a domain's state come from list calls for all
    objects at once: the per-object calls that would cost one round trip each are not
    made, and every object still gets its own flags right."""
    conn = client._conn
    conn.lookupByName("test").setAutostart(1)
    conn.defineXML("<domain type='test'><name>t-off</name><memory>1024</memory><os><type>hvm</type></os></domain>")
    conn.createXML("<domain type='test'><name>t-transient</name><memory>1024</memory>"
                   "<os><type>hvm</type></os></domain>", 0)
    conn.networkDefineXML("<network><name>t-net</name><bridge name='virbr9'/></network>")
    conn.storagePoolDefineXML("<pool type='dir'><name>t-pool</name><target><path>/t-pool</path></target></pool>")

    def per_object(*_args: object) -> None:
        raise AssertionError("a per-object flag call in observation")

    for cls in (libvirt.virDomain, libvirt.virNetwork, libvirt.virStoragePool):
        for name in ("isActive", "isPersistent", "autostart", "state"):
            if hasattr(cls, name):
                monkeypatch.setattr(cls, name, per_object)
    monkeypatch.setattr(libvirt.virStorageVol, "path", per_object)

    domains = {d.name: (d.state, d.persistent, d.autostart, d.live_xml is not None) for d in client.domains()}
    assert domains == {"test": ("running", True, True, True), "t-off": ("shutoff", True, False, False),
                       "t-transient": ("running", False, False, True)}
    networks = {n.name: (n.active, n.persistent, n.autostart) for n in client.networks()}
    assert networks == {"default": (True, True, False), "t-net": (False, True, False)}
    pools = {p.name: (p.active, p.autostart, len(p.volumes)) for p in client.pools()}
    assert pools["t-pool"] == (False, False, 0) and pools["default-pool"][0] is True


def test_a_domain_missing_from_the_batched_states_is_asked_on_its_own(
        client: Libvirt, monkeypatch: pytest.MonkeyPatch) -> None:
    """If the one stats call leaves a domain out, or reports no state for it, the
    domain is asked directly: a running VM is never taken for a stopped one."""
    conn = client._conn
    conn.createXML("<domain type='test'><name>t-other</name><memory>1024</memory>"
                   "<os><type>hvm</type></os></domain>", 0)
    batched = conn.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_STATE, 0)
    partial = [(dom, {} if dom.name() == "test" else stats) for dom, stats in batched if dom.name() != "t-other"]
    monkeypatch.setattr(conn, "getAllDomainStats", lambda *_args: partial)
    assert {d.name: (d.state, d.live_xml is not None) for d in client.domains()} == {
        "test": ("running", True), "t-other": ("running", True)}


def test_a_libvirt_without_batched_states_is_asked_domain_by_domain(
        client: Libvirt, monkeypatch: pytest.MonkeyPatch) -> None:
    class Unsupported(libvirt.libvirtError):
        def get_error_code(self) -> int:
            return libvirt.VIR_ERR_NO_SUPPORT

    calls = []

    def no_stats(*_args: object) -> None:
        calls.append(1)
        raise Unsupported("this version of libvirt does not support the operation")

    monkeypatch.setattr(client._conn, "getAllDomainStats", no_stats)
    for _ in range(2):
        assert [(d.name, d.state) for d in client.domains()] == [("test", "running")]
    assert calls == [1], "an unsupported call is not tried again on every observation"


def test_the_test_driver_is_one_connection_for_every_thread(client: Libvirt) -> None:
    """test:///default is a host inside this process (and test:///FILE one per
    connection): a worker's calls stay on the connection the host lives in."""
    seen = []

    def worker() -> None:
        with client.own_connection():
            seen.append(client._conn)
            client.destroy_domain("test")

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == [client._main]
    assert client.domain_state("test") == "shutoff"


def test_workers_hold_connections_of_their_own_until_close() -> None:
    """The leasing itself, on connections to test:///default (one host per process, so
    every connection sees the same): what a qemu:/// client does for its workers."""
    client = Libvirt("test:///default")
    client._one_only = False
    held: dict[str, object] = {}
    both = threading.Barrier(2)

    def worker(name: str) -> None:
        with client.own_connection():
            held[name] = client._conn
            both.wait(timeout=30)            # both hold one at the same time
            if name == "a":
                client.destroy_domain("test")
            both.wait(timeout=30)

    threads = [threading.Thread(target=worker, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len({id(client._main), id(held["a"]), id(held["b"])}) == 3
    assert client.domain_state("test") == "shutoff"     # a worker's change is the host's
    assert client.mutations == 1                        # and is counted as the client's

    with client.own_connection():                       # kept: the next block opens none
        assert client._conn in (held["a"], held["b"])
        with client.own_connection():                   # nested: the same one
            inner = client._conn
        assert client._conn is inner
        client.close()                                  # closed while held: at the block's end
        assert client._conn.isAlive()
    with pytest.raises(libvirt.libvirtError):
        held["a"].isAlive()                             # type: ignore[attr-defined]
    with pytest.raises(libvirt.libvirtError):
        held["b"].isAlive()                             # type: ignore[attr-defined]


def test_a_worker_that_cannot_connect_fails_with_our_error() -> None:
    with Libvirt("test:///default") as client:
        client._one_only = False
        client.uri = "test:///no/such/host.xml"
        with pytest.raises(errors.LibvirtFailure) as caught:
            with client.own_connection():
                pass   # entering is what fails: the worker's connection is opened there
        assert isinstance(caught.value.__cause__, libvirt.libvirtError)


def test_a_workers_connection_found_dead_is_replaced() -> None:
    """A connection its keepalive closed (a hung libvirtd) is not handed out again."""
    with Libvirt("test:///default") as client:
        client._one_only = False
        with client.own_connection():
            first = client._conn
        first.close()                                   # type: ignore[attr-defined]
        with client.own_connection():
            assert client._conn is not first
            assert client.domain_state("test") == "running"
