"""The adapter maps libvirt's errors by code to our own exceptions, with the original chained."""

from __future__ import annotations

import threading
import time
from typing import Any

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


def _with_spares(client: Libvirt, count: int) -> Libvirt:
    """Idle connections as a qemu:/// client has them (kept by its workers, or opened
    ahead by Connecting), to test:///default: every connection sees the same host."""
    client._one_only = False
    for _ in range(count):
        client._give_back(client._open())
    return client


class _Calls:
    """Every list call of an observation: its thread and connection, and how many
    calls were in flight on that connection at once (libvirt's client must never have
    two: see Libvirt.inventory)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail: str | None = None) -> None:
        self.seen: list[tuple[str, int, int]] = []      # (call, thread, connection)
        self.most_at_once = 0
        self._in_flight: dict[int, int] = {}
        self._lock = threading.Lock()
        for name in ("listAllStoragePools", "listAllNetworks", "listAllDomains"):
            monkeypatch.setattr(libvirt.virConnect, name, self._wrap(name, getattr(libvirt.virConnect, name), fail))

    def _wrap(self, name: str, call: Any, fail: str | None) -> Any:
        def listing(conn: libvirt.virConnect, flags: int = 0) -> Any:
            with self._lock:
                self._in_flight[id(conn)] = self._in_flight.get(id(conn), 0) + 1
                self.most_at_once = max(self.most_at_once, self._in_flight[id(conn)])
                self.seen.append((name, threading.get_ident(), id(conn)))
            try:
                time.sleep(0.002)          # a round trip: the others run meanwhile
                if name == fail:
                    raise _Failure(libvirt.VIR_ERR_INTERNAL_ERROR, f"{name} failed")
                return call(conn, flags)
            finally:
                with self._lock:
                    self._in_flight[id(conn)] -= 1

        return listing

    def threads(self) -> set[int]:
        return {thread for _, thread, _ in self.seen}

    def connections(self) -> set[int]:
        return {conn for _, _, conn in self.seen}


def test_with_spare_connections_the_kinds_are_read_side_by_side(
        client: Libvirt, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(8):
        client._conn.defineXML(f"<domain type='test'><name>t-{i}</name><memory>1024</memory>"
                               "<os><type>hvm</type></os></domain>")
    one_by_one = client.inventory()
    calls = _Calls(monkeypatch)
    read_by: dict[str, list[int]] = {}              # domain name: the connections its XML was read on
    xml_desc = libvirt.virDomain.XMLDesc

    def reading(dom: libvirt.virDomain, flags: int = 0) -> str:
        read_by.setdefault(dom.name(), []).append(id(dom._conn))
        return xml_desc(dom, flags)

    monkeypatch.setattr(libvirt.virDomain, "XMLDesc", reading)
    spares = _with_spares(client, 2)._idle[:]
    assert client.inventory() == one_by_one
    assert calls.most_at_once == 1, "two calls at once on one connection"
    connections = {kind: {conn for name, _, conn in calls.seen if name == kind}
                   for kind in ("listAllStoragePools", "listAllNetworks", "listAllDomains")}
    assert connections["listAllStoragePools"] == {id(client._main)}
    assert connections["listAllDomains"] == set(map(id, spares)), "the domains shared by the two spares"
    assert len(connections["listAllNetworks"]) == 1 and connections["listAllNetworks"] < set(map(id, spares))
    assert sorted(read_by) == sorted(d.name for d in one_by_one[2]) == [d.name for d in one_by_one[2]]
    assert all(len(set(conns)) == 1 for conns in read_by.values()), "each domain read on one connection"
    shares = {conns[0] for conns in read_by.values()}
    assert shares == set(map(id, spares)), "both spares read some of the domains"
    assert len(calls.threads()) == 3
    assert sorted(map(id, client._idle)) == sorted(map(id, spares)), "the spares are kept for the workers"
    assert not [t for t in threading.enumerate() if t.name == "iaasctl-read"]


def test_with_one_spare_connection_domains_and_networks_are_read_on_it(
        client: Libvirt, monkeypatch: pytest.MonkeyPatch) -> None:
    one_by_one = client.inventory()
    calls = _Calls(monkeypatch)
    spare = _with_spares(client, 1)._idle[0]
    assert client.inventory() == one_by_one
    by_kind = {name: conn for name, _, conn in calls.seen}
    assert by_kind["listAllDomains"] == by_kind["listAllNetworks"] == id(spare)
    assert by_kind["listAllStoragePools"] == id(client._main)
    assert calls.most_at_once == 1


def test_without_spare_connections_none_is_opened_to_observe(
        client: Libvirt, monkeypatch: pytest.MonkeyPatch) -> None:
    client._one_only = False
    calls = _Calls(monkeypatch)
    client.inventory()
    assert calls.connections() == {id(client._main)} and calls.threads() == {threading.get_ident()}
    assert client._idle == []


def test_a_failed_read_on_a_spare_is_our_error_once_every_reader_stopped(
        client: Libvirt, monkeypatch: pytest.MonkeyPatch) -> None:
    _Calls(monkeypatch, fail="listAllDomains")
    _with_spares(client, 2)
    with pytest.raises(errors.LibvirtFailure, match="listAllDomains failed") as caught:
        client.inventory()
    assert isinstance(caught.value.__cause__, libvirt.libvirtError)
    assert not [t for t in threading.enumerate() if t.name == "iaasctl-read"]
    assert len(client._idle) == 2


def test_a_volume_deleted_while_observed_leaves_its_pool_observed(
        client: Libvirt, monkeypatch: pytest.MonkeyPatch) -> None:
    pool = client._conn.storagePoolLookupByName("default-pool")
    for name in ("keep", "gone"):
        pool.createXML(f"<volume><name>{name}</name><capacity>1024</capacity></volume>", 0)
    _xml_fails(monkeypatch, libvirt.virStorageVol, "gone", libvirt.VIR_ERR_NO_STORAGE_VOL,
               "no storage vol with matching name 'gone'")
    pools = {p.name: [v.name for v in p.volumes] for p in client.pools()}
    assert pools["default-pool"] == ["keep"]


def _xml_fails(monkeypatch: pytest.MonkeyPatch, cls: type, name: str, code: int, message: str) -> None:
    """`XMLDesc` of the object called `name` fails as libvirt would, with `code`."""
    xml_desc = cls.XMLDesc  # type: ignore[attr-defined]

    def failing(obj: Any, flags: int = 0) -> str:
        if obj.name() == name:
            raise _Failure(code, message)
        return xml_desc(obj, flags)  # type: ignore[no-any-return]

    monkeypatch.setattr(cls, "XMLDesc", failing)


class _Failure(libvirt.libvirtError):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code

    def get_error_code(self) -> int:
        return self.code

    def get_error_message(self) -> str:
        return str(self)
