"""The libvirt adapter: the only module that imports `libvirt`.

Everything above it (observe, execute, get/describe) talks to this class and
receives plain data: names, XML strings, numbers. libvirt errors are mapped here,
by error *code*, to the project's own exceptions (controller.errors), chained to
the original. Each mutating call is counted, so that "a second apply makes no
mutating call" is something a test and a metric can check, not hope for.
"""

from __future__ import annotations

import functools
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar
from xml.etree import ElementTree as ET

import libvirt

from controller import errors
from controller.kinds.base import OWNER_NS, OwnerMark

P = ParamSpec("P")
R = TypeVar("R")

_NOT_FOUND = {
    libvirt.VIR_ERR_NO_DOMAIN,
    libvirt.VIR_ERR_NO_NETWORK,
    libvirt.VIR_ERR_NO_STORAGE_POOL,
    libvirt.VIR_ERR_NO_STORAGE_VOL,
}
_EXISTS = {
    libvirt.VIR_ERR_DOM_EXIST,
    libvirt.VIR_ERR_NETWORK_EXIST,
    libvirt.VIR_ERR_STORAGE_VOL_EXIST,
    libvirt.VIR_ERR_STORAGE_POOL_BUILT,
}
_INVALID_FOR_HOST = {
    libvirt.VIR_ERR_XML_ERROR,
    libvirt.VIR_ERR_XML_DETAIL,
    libvirt.VIR_ERR_CONFIG_UNSUPPORTED,
    libvirt.VIR_ERR_INVALID_ARG,
    libvirt.VIR_ERR_NO_SUPPORT,
}
_TRANSIENT = {
    libvirt.VIR_ERR_OPERATION_TIMEOUT,
    libvirt.VIR_ERR_RESOURCE_BUSY,
    libvirt.VIR_ERR_AGENT_UNRESPONSIVE,
}
# A lost or hung connection, as nova's _test_connection classifies it.
_DISCONNECT_CODES = {libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_RPC, libvirt.VIR_ERR_INVALID_CONN}
_DISCONNECT_DOMAINS = {libvirt.VIR_FROM_RPC, libvirt.VIR_FROM_REMOTE}


def _silence(_ctx: object, _err: object) -> None:
    """libvirt prints every error to stderr by default; ours are raised and reported once."""


libvirt.registerErrorHandler(_silence, None)


def map_error(exc: libvirt.libvirtError) -> errors.LibvirtFailure:
    """Our exception for a libvirt error, chosen by its code and domain."""
    code, domain = exc.get_error_code(), exc.get_error_domain()
    message = exc.get_error_message() or str(exc)
    cls: type[errors.LibvirtFailure]
    if code in _NOT_FOUND:
        cls = errors.NotFound
    elif code in _EXISTS:
        cls = errors.AlreadyExists
    elif code == libvirt.VIR_ERR_OPERATION_INVALID:
        cls = errors.OperationInvalid
    elif code in _DISCONNECT_CODES or (
        # an internal or system error of the RPC layer is the connection itself; from a
        # storage or QEMU driver the same codes are about a file or a process
        code in (libvirt.VIR_ERR_INTERNAL_ERROR, libvirt.VIR_ERR_SYSTEM_ERROR) and domain in _DISCONNECT_DOMAINS
    ):
        cls = errors.Disconnected
    elif code in _INVALID_FOR_HOST:
        cls = errors.InvalidForHost
    elif code in _TRANSIENT:
        cls = errors.TransientFailure
    else:
        cls = errors.LibvirtFailure
    return cls(message, code=code)


@contextmanager
def _mapped() -> Iterator[None]:
    try:
        yield
    except libvirt.libvirtError as exc:
        raise map_error(exc) from exc


def _mutating(method: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        self = args[0]
        assert isinstance(self, Libvirt)
        with self._lock:
            self.mutations += 1
        with _mapped():
            return method(*args, **kwargs)

    return wrapper


def _reading(method: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with _mapped():
            return method(*args, **kwargs)

    return wrapper


# libvirt's domain states, spelled as `virsh domstate` does.
_DOMAIN_STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: "nostate",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "running",  # blocked on I/O is running, as far as a user cares
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutting-down",
    libvirt.VIR_DOMAIN_SHUTOFF: "shutoff",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "pmsuspended",
}


@dataclass(frozen=True)
class DomainRecord:
    """One domain as libvirt reports it; `state` is spelled as `virsh domstate` spells it."""

    name: str
    uuid: str
    state: str
    persistent: bool
    autostart: bool
    config_xml: str          # the persistent definition (what the next boot uses)
    live_xml: str | None     # the running definition, None when not running


@dataclass(frozen=True)
class NetworkRecord:
    """One network as libvirt reports it; `config_xml` is its persistent definition when it has one."""

    name: str
    uuid: str
    active: bool
    persistent: bool
    autostart: bool
    config_xml: str


@dataclass(frozen=True)
class VolumeRecord:
    """One storage volume as libvirt reports it; its name is unique only within its pool."""

    pool: str
    name: str
    xml: str                 # its path is in it (target/path)


@dataclass(frozen=True)
class PoolRecord:
    """One storage pool as libvirt reports it, with its volumes (none are listed while it is inactive)."""

    name: str
    uuid: str
    active: bool
    autostart: bool
    xml: str
    volumes: tuple[VolumeRecord, ...]


@dataclass(frozen=True)
class HostRecord:
    """The host's size, which a VM to create or resize is admitted against (the guest
    types it offers are `Libvirt.domain_types()`: only rendering a VM needs them)."""

    cpus: int
    memory: int                        # bytes


def _list_with(list_all: Callable[[int], list[Any]], *flags: int) -> tuple[list[Any], list[frozenset[str]]]:
    """Every object, and for each flag the names of those it selects (active,
    persistent, autostart): one call per flag instead of one per object and flag."""
    objects = list_all(0)
    if not objects:
        return [], [frozenset()] * len(flags)
    return objects, [frozenset(o.name() for o in list_all(flag)) for flag in flags]


def _volume_record(pool: str, vol: Any) -> VolumeRecord | None:
    try:
        return VolumeRecord(pool=pool, name=vol.name(), xml=vol.XMLDesc(0))
    except libvirt.libvirtError as exc:
        # Deleted between the list and the read: it is gone, its pool is still there.
        if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_VOL:
            raise
        return None


def _in_process(uri: str) -> bool:
    """The test driver: a host inside this process (test:///default), or one per
    connection (test:///FILE), with no daemon to wait for."""
    return uri.startswith("test:")


def _close(conn: Any) -> None:
    try:
        conn.close()
    except libvirt.libvirtError:
        pass  # closing a dead connection has nothing left to release


class Connecting:
    """A libvirt.open under way on a thread of its own, begun before it is needed (a
    command connects while it reads its manifests): `result` takes the connection,
    `abandon` drops it, and a `with` block abandons it if the block raises.

    `result` gives up `timeout` seconds after the start. A hung libvirtd (stopped, or
    stuck) accepts the socket and never answers, and libvirt's open has no deadline of
    its own (keepalive starts only once a connection is open): without one a command,
    or the daemon's reconnect, would wait until libvirtd came back. The thread left
    waiting closes the connection if it ever gets one.

    `spares` more connections are opened after it, for the Libvirt client that takes
    the connection (see `hand_over`): a command's first observation reads with them,
    and its first workers work on them, instead of opening their own while the user
    waits. Failing to open one is no error: a worker opens its own when it needs it."""

    def __init__(self, uri: str, timeout: float | None, *, spares: int = 0) -> None:
        self.uri = uri
        self.timeout = timeout
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._conn: Any = None
        self._error: libvirt.libvirtError | None = None
        self._dropped = False
        self._abandoned = False
        self._spares = 0 if _in_process(uri) else spares
        self._opened: list[Any] = []                      # spares not handed over yet
        self._receiver: Callable[[Any], None] | None = None
        threading.Thread(target=self._attempt, name="iaasctl-connect", daemon=True).start()

    def _attempt(self) -> None:
        try:
            conn = libvirt.open(self.uri)
        except libvirt.libvirtError as exc:
            self._error = exc
        else:
            with self._lock:
                if self._dropped:
                    _close(conn)
                    return
                self._conn = conn
        self._done.set()
        for _ in range(self._spares if self._error is None else 0):
            try:
                self._deliver(libvirt.open(self.uri))
            except libvirt.libvirtError:
                return

    def _deliver(self, conn: Any) -> None:
        with self._lock:
            receiver = self._receiver
            if receiver is None and not self._abandoned:
                self._opened.append(conn)
                return
        if receiver is None:
            _close(conn)
        else:
            receiver(conn)

    def hand_over(self, receiver: Callable[[Any], None]) -> None:
        """Spare connections go to `receiver`, those opened already and each one later."""
        with self._lock:
            self._receiver = receiver
            opened, self._opened = self._opened, []
        for conn in opened:
            receiver(conn)

    def result(self) -> Any:
        """The connection, once: the caller owns it from here."""
        self._done.wait(None if self._deadline is None else max(0.0, self._deadline - time.monotonic()))
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                self._dropped = True     # taken: nothing left for abandon() to close
                return conn
            if self._error is None:
                self._dropped = True
                raise errors.Disconnected(
                    f"{self.uri}: libvirt did not answer within {self.timeout:g} s (is libvirtd hung?)",
                    code=libvirt.VIR_ERR_OPERATION_TIMEOUT)
        raise map_error(self._error) from self._error

    def abandon(self) -> None:
        with self._lock:
            self._dropped = self._abandoned = True
            conn, self._conn = self._conn, None
            opened = [] if self._receiver is not None else self._opened   # handed over: the receiver's
            self._opened = []
        for each in (conn, *opened):
            if each is not None:
                _close(each)

    def __enter__(self) -> Connecting:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is not None:
            self.abandon()


def open_within(uri: str, timeout: float | None) -> Any:
    """libvirt.open, given up after `timeout` seconds (see Connecting)."""
    return Connecting(uri, timeout).result()


def _alive(conn: Any) -> bool:
    """What the client knows of its connection, without a round trip."""
    try:
        return bool(conn.isAlive())
    except libvirt.libvirtError:
        return False


def set_keepalive(conn: Any, keepalive: tuple[int, int]) -> None:
    """Ping the peer every interval seconds; after count unanswered pings the
    connection is closed. Drivers without keepalive (in-process ones) simply have none."""
    try:
        conn.setKeepAlive(*keepalive)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() not in (libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_INVALID_ARG):
            raise


class Libvirt:
    """One libvirt URI: its connection, and the workers' own (see `own_connection`).
    Thread-safe as libvirt connections are."""

    def __init__(self, uri: str, *, connect_timeout: float | None = None,
                 connecting: Connecting | None = None, keepalive: tuple[int, int] | None = None) -> None:
        """`connecting`: the open of `uri` begun earlier, to finish instead of a new one.
        `keepalive` (see set_keepalive; needs libvirt's event loop running, see
        events.start_event_loop): on this connection and each one opened later."""
        self.uri = uri
        self.connect_timeout = connect_timeout
        self.mutations = 0
        self.keepalive: tuple[int, int] | None = None   # set on each connection once the daemon asks
        self._lock = threading.Lock()
        self._network_inactive_flag = True
        self._stats_call = True          # getAllDomainStats(STATE, NOWAIT): libvirt >= 4.5
        self._domain_types: tuple[str, ...] | None = None    # see domain_types()
        self._own = threading.local()    # .conn: the connection this thread holds in own_connection()
        self._idle: list[Any] = []       # workers' connections between two blocks
        self._closed = False
        # The in-process test driver has no daemon to wait for, and test:///FILE is
        # a host of its own per connection: there every thread shares the one.
        self._one_only = _in_process(uri)
        self._main = (connecting or Connecting(uri, connect_timeout)).result()
        if keepalive is not None:
            try:
                with _mapped():
                    set_keepalive(self._main, keepalive)
            except BaseException:
                _close(self._main)
                raise
            self.keepalive = keepalive
        if connecting is not None:
            connecting.hand_over(self._adopt)

    def _adopt(self, conn: Any) -> None:
        """A connection opened ahead (Connecting's spares) joins the idle ones."""
        if self.keepalive is not None:
            try:
                set_keepalive(conn, self.keepalive)
            except libvirt.libvirtError:
                _close(conn)
                return
        self._give_back(conn)

    def _give_back(self, conn: Any) -> None:
        with self._lock:
            keep = not self._closed
            if keep:
                self._idle.append(conn)
        if not keep:
            _close(conn)

    @property
    def _conn(self) -> Any:
        return getattr(self._own, "conn", None) or self._main

    @contextmanager
    def own_connection(self) -> Iterator[None]:
        """This thread's calls, for the block, go over a connection no other thread
        uses meanwhile. On one shared connection libvirtd may hold a quick call until
        another thread's slow one returns: a pool's start waits for a network's start,
        a VM's definition for other VMs' starts (docs/performance.md, seventh round),
        and changes run side by side would wait in line. Connections are opened when
        first needed and kept until `close`; one found dead (its keepalive gave up on
        a hung libvirtd) is closed and replaced, not handed out again."""
        if self._one_only or getattr(self._own, "conn", None) is not None:
            yield
            return
        conn = self._idle_alive() or self._open()
        self._own.conn = conn
        try:
            yield
        finally:
            self._own.conn = None
            self._give_back(conn)

    def _idle_alive(self) -> Any:
        """A kept connection that is still open, if there is one; dead ones are closed."""
        while True:
            with self._lock:
                if not self._idle:
                    return None
                conn = self._idle.pop()
            if _alive(conn):
                return conn
            _close(conn)

    def _open(self) -> Any:
        conn = open_within(self.uri, self.connect_timeout)
        if self.keepalive is not None:
            with _mapped():
                set_keepalive(conn, self.keepalive)
        return conn

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in (self._main, *idle):
            _close(conn)

    def __enter__(self) -> Libvirt:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- host -----------------------------------------------------------------

    @_reading
    def host(self) -> HostRecord:
        info = self._conn.getInfo()      # one round trip, on the planner's path to a new VM
        return HostRecord(cpus=int(info[2]), memory=int(info[1]) << 20)

    @_reading
    def domain_types(self) -> tuple[str, ...]:
        """What the capabilities offer for hvm guests, e.g. ("qemu", "kvm"). Read once per
        connection, and only when asked: libvirt builds the capabilities document for
        each call (2-5 ms on a QEMU host), and only rendering a VM needs them."""
        if self._domain_types is None:
            self._domain_types = self._offered()
        return self._domain_types

    def _offered(self) -> tuple[str, ...]:
        caps = ET.fromstring(self._conn.getCapabilities())
        types: list[str] = []
        for guest in caps.findall("guest"):
            if guest.findtext("os_type") != "hvm" and self._conn.getType() != "Test":
                continue
            for dom in guest.findall("arch/domain"):
                kind = dom.get("type")
                if kind and kind not in types:
                    types.append(kind)
        return tuple(types)

    # -- observation: batched list-all calls, one XML read per object ----------
    #
    # Which objects are active, persistent or autostarted, and each domain's state,
    # come from a few list calls filtered by flag, for all objects at once; per object
    # there is only its XML (two for a running domain: the definition and the running
    # one). An object created between two list calls shows in one and not the other:
    # what is not in the first list is not seen this time, what is gone from a later
    # one counts as gone. See inventory() for the three kinds read side by side.

    def inventory(self) -> tuple[list[PoolRecord], list[NetworkRecord], list[DomainRecord]]:
        """Every pool with its volumes, every network and every domain.

        With idle connections at hand (workers' kept ones, or Connecting's spares) the
        kinds are read side by side, each reader on a connection of its own; none is
        opened for it. With two, the domains (two XML reads each when running, the
        most reads) are shared between them by name, and the networks follow on the
        first; with one, domains and networks go on it. The pools and their volumes
        are read on this thread's connection meanwhile. Never two calls at once on
        one connection: when keepalive closes a connection to a hung libvirtd,
        libvirt's client (9.0) fails the call that is reading the socket and leaves
        the others on it waiting for ever (tests/realhost/test_connections.py)."""
        spares = [] if getattr(self._own, "conn", None) is not None else self._idle_taken(2)
        if not spares:
            return self.pools(), self.networks(), self.domains()
        found: dict[str, Any] = {}
        failures: list[BaseException] = []

        def read_on(conn: Any, reads: dict[str, Callable[[], Any]]) -> None:
            if conn is not None:
                self._own.conn = conn          # this helper thread's calls go over it
            try:
                for key, read in reads.items():
                    found[key] = read()
            except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread below
                failures.append(exc)

        if len(spares) == 2:
            batches = [{"domains 0": lambda: self.domains(share=(0, 2)), "networks": self.networks},
                       {"domains 1": lambda: self.domains(share=(1, 2))}]
        else:
            batches = [{"domains 0": self.domains, "networks": self.networks}]
        helpers = [threading.Thread(target=read_on, args=(conn, batch), name="iaasctl-read", daemon=True)
                   for conn, batch in zip(spares, batches, strict=True)]
        for helper in helpers:
            helper.start()
        read_on(None, {"pools": self.pools})
        for helper in helpers:
            helper.join()
        for conn in spares:
            self._give_back(conn)
        if failures:
            raise failures[0]
        domains = sorted(found["domains 0"] + found.get("domains 1", []), key=lambda d: d.name)
        return found["pools"], found["networks"], domains

    def _idle_taken(self, most: int) -> list[Any]:
        taken: list[Any] = []
        while len(taken) < most and (conn := self._idle_alive()) is not None:
            taken.append(conn)
        return taken

    @_reading
    def domains(self, *, share: tuple[int, int] = (0, 1)) -> list[DomainRecord]:
        """Every domain, by name; with `share` (i, n), the i-th of n shares of them,
        split by a hash of the name (readers on n connections list each)."""
        conn = self._conn
        doms, (persistent, autostart) = _list_with(
            conn.listAllDomains, libvirt.VIR_CONNECT_LIST_DOMAINS_PERSISTENT,
            libvirt.VIR_CONNECT_LIST_DOMAINS_AUTOSTART)
        index, shares = share
        named = sorted((dom.name(), dom) for dom in doms)
        if shares > 1:
            named = [(name, dom) for name, dom in named if zlib.crc32(name.encode()) % shares == index]
        if not named:
            return []
        states = self._domain_states()
        records = []
        for name, dom in named:
            try:
                # A domain the batch did not report on (defined since, or a driver that
                # leaves it out) is asked on its own: never guessed to be shut off.
                state = states.get(name)
                if state is None:
                    state = dom.state()[0]
                records.append(self._domain_record(dom, state, name in persistent, name in autostart))
            except libvirt.libvirtError as exc:
                # Undefined between the list and the read: it is simply gone.
                if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                    raise
        return records

    def _domain_states(self) -> dict[str, int | None]:
        """Every domain's state in one call; empty (each domain is then asked on its
        own) from a libvirt that does not have the call or its flag."""
        if self._stats_call:
            try:
                return {dom.name(): stats.get("state.state") for dom, stats in self._conn.getAllDomainStats(
                    libvirt.VIR_DOMAIN_STATS_STATE, libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT)}
            except libvirt.libvirtError as exc:
                if exc.get_error_code() not in (libvirt.VIR_ERR_INVALID_ARG, libvirt.VIR_ERR_NO_SUPPORT):
                    raise
                self._stats_call = False
        return {}

    def _domain_record(self, dom: Any, state: int, persistent: bool, autostart: bool) -> DomainRecord:
        active = state not in (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_NOSTATE)
        live_xml = dom.XMLDesc(0) if active else None
        return DomainRecord(
            name=dom.name(),
            uuid=dom.UUIDString(),
            state=_DOMAIN_STATES.get(state, "nostate"),
            persistent=persistent,
            autostart=autostart and persistent,
            config_xml=dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE) if persistent or live_xml is None else live_xml,
            live_xml=live_xml,
        )

    @_reading
    def domain(self, name: str) -> DomainRecord:
        dom = self._conn.lookupByName(name)
        persistent = bool(dom.isPersistent())
        return self._domain_record(dom, dom.state()[0], persistent, persistent and bool(dom.autostart()))

    @_reading
    def networks(self) -> list[NetworkRecord]:
        nets, (active, persistent, autostart) = _list_with(
            self._conn.listAllNetworks, libvirt.VIR_CONNECT_LIST_NETWORKS_ACTIVE,
            libvirt.VIR_CONNECT_LIST_NETWORKS_PERSISTENT, libvirt.VIR_CONNECT_LIST_NETWORKS_AUTOSTART)
        records = []
        for net in nets:
            name = net.name()
            try:
                records.append(NetworkRecord(
                    name=name,
                    uuid=net.UUIDString(),
                    active=name in active,
                    persistent=name in persistent,
                    autostart=name in autostart and name in persistent,
                    config_xml=self._network_xml(net, name in persistent),
                ))
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_NETWORK:
                    raise
        return records

    def _network_xml(self, net: Any, persistent: bool) -> str:
        """The persistent definition; drivers without the INACTIVE flag (the test
        driver) have only one definition anyway."""
        if persistent and self._network_inactive_flag:
            try:
                return str(net.XMLDesc(libvirt.VIR_NETWORK_XML_INACTIVE))
            except libvirt.libvirtError as exc:
                if exc.get_error_code() not in (libvirt.VIR_ERR_INVALID_ARG, libvirt.VIR_ERR_NO_SUPPORT):
                    raise
                self._network_inactive_flag = False
        return str(net.XMLDesc(0))

    @_reading
    def pools(self) -> list[PoolRecord]:
        pools, (active, autostart) = _list_with(
            self._conn.listAllStoragePools, libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE,
            libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_AUTOSTART)
        records = []
        for pool in pools:
            name = pool.name()
            try:
                volumes: tuple[VolumeRecord, ...] = ()
                if name in active:
                    volumes = tuple(vol for vol in map(functools.partial(_volume_record, name), pool.listAllVolumes(0))
                                    if vol is not None)
                records.append(PoolRecord(
                    name=name,
                    uuid=pool.UUIDString(),
                    active=name in active,
                    autostart=name in autostart,
                    xml=pool.XMLDesc(0),  # the path is the same live and inactive
                    volumes=volumes,
                ))
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_POOL:
                    raise
        return records

    @_reading
    def domain_addresses(self, name: str) -> list[tuple[str, str]]:
        """(mac, ipv4) pairs from the DHCP leases of libvirt's own networks."""
        dom = self._conn.lookupByName(name)
        if not dom.isActive():
            return []
        try:
            ifaces = dom.interfaceAddresses(libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE, 0)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() in (libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_OPERATION_INVALID):
                return []
            raise
        pairs = []
        for iface in (ifaces or {}).values():
            for addr in iface.get("addrs") or []:
                if addr.get("type") == libvirt.VIR_IP_ADDR_TYPE_IPV4:
                    pairs.append(((iface.get("hwaddr") or "").lower(), addr["addr"]))
        return pairs

    # -- domains ----------------------------------------------------------------

    @_mutating
    def define_domain(self, xml: str) -> str:
        return str(self._conn.defineXML(xml).UUIDString())

    @_mutating
    def start_domain(self, name: str) -> None:
        self._conn.lookupByName(name).create()

    @_mutating
    def shutdown_domain(self, name: str) -> None:
        self._conn.lookupByName(name).shutdown()

    @_mutating
    def destroy_domain(self, name: str) -> None:
        self._conn.lookupByName(name).destroy()

    @_mutating
    def undefine_domain(self, name: str) -> None:
        dom = self._conn.lookupByName(name)
        flags = (
            libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
            | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
            | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
        )
        # Drivers reject flags they do not know (the test driver has no NVRAM): drop them in turn.
        for attempt in (flags, flags & ~libvirt.VIR_DOMAIN_UNDEFINE_NVRAM, 0):
            try:
                dom.undefineFlags(attempt)
                return
            except libvirt.libvirtError as exc:
                if exc.get_error_code() not in (libvirt.VIR_ERR_INVALID_ARG, libvirt.VIR_ERR_NO_SUPPORT) \
                        or attempt == 0:
                    raise

    @_mutating
    def set_domain_autostart(self, name: str, enabled: bool) -> None:
        self._conn.lookupByName(name).setAutostart(int(enabled))

    @_mutating
    def set_domain_owner(self, name: str, mark: OwnerMark) -> None:
        """Put the owner marker into an existing domain's persistent definition."""
        element = ET.Element("owner", {"source": mark.source})
        self._conn.lookupByName(name).setMetadata(
            libvirt.VIR_DOMAIN_METADATA_ELEMENT, ET.tostring(element, encoding="unicode"), "iaasctl", OWNER_NS,
            libvirt.VIR_DOMAIN_AFFECT_CONFIG,
        )

    @_reading
    def domain_state(self, name: str) -> str:
        return _DOMAIN_STATES.get(self._conn.lookupByName(name).state()[0], "nostate")

    # -- networks ---------------------------------------------------------------

    @_mutating
    def define_network(self, xml: str) -> str:
        return str(self._conn.networkDefineXML(xml).UUIDString())

    @_mutating
    def start_network(self, name: str) -> None:
        self._conn.networkLookupByName(name).create()

    @_mutating
    def destroy_network(self, name: str) -> None:
        self._conn.networkLookupByName(name).destroy()

    @_mutating
    def undefine_network(self, name: str) -> None:
        self._conn.networkLookupByName(name).undefine()

    @_mutating
    def set_network_autostart(self, name: str, enabled: bool) -> None:
        self._conn.networkLookupByName(name).setAutostart(int(enabled))

    @_mutating
    def update_network_dhcp_host(self, name: str, host_xml: str, *, add: bool, live: bool) -> None:
        """Add or remove one static DHCP host, in the definition and (when running) live."""
        net = self._conn.networkLookupByName(name)
        command = (
            libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST if add else libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE
        )
        flags = libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG
        if live:
            flags |= libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE
        net.update(command, libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST, -1, host_xml, flags)

    @_reading
    def network_bridge(self, name: str) -> str:
        return str(self._conn.networkLookupByName(name).bridgeName())

    # -- storage ----------------------------------------------------------------

    @_mutating
    def define_pool(self, xml: str) -> str:
        return str(self._conn.storagePoolDefineXML(xml, 0).UUIDString())

    @_mutating
    def build_pool(self, name: str) -> None:
        """Make the pool's directory. For dir pools building never destroys anything
        (NO_OVERWRITE is for pools that format a device, and dir pools reject it)."""
        self._conn.storagePoolLookupByName(name).build(0)

    @_mutating
    def start_pool(self, name: str) -> None:
        self._conn.storagePoolLookupByName(name).create(0)

    @_mutating
    def destroy_pool(self, name: str) -> None:
        self._conn.storagePoolLookupByName(name).destroy()

    @_mutating
    def undefine_pool(self, name: str) -> None:
        self._conn.storagePoolLookupByName(name).undefine()

    @_mutating
    def set_pool_autostart(self, name: str, enabled: bool) -> None:
        self._conn.storagePoolLookupByName(name).setAutostart(int(enabled))

    @_mutating
    def create_volume(self, pool: str, xml: str) -> str:
        """Create a volume from XML; returns its path."""
        return str(self._conn.storagePoolLookupByName(pool).createXML(xml, 0).path())

    @_mutating
    def delete_volume(self, pool: str, name: str) -> None:
        self._conn.storagePoolLookupByName(pool).storageVolLookupByName(name).delete(0)

    @_mutating
    def resize_volume(self, pool: str, name: str, capacity: int) -> None:
        self._conn.storagePoolLookupByName(pool).storageVolLookupByName(name).resize(capacity, 0)

    @_mutating
    def block_resize(self, domain: str, path: str, capacity: int) -> None:
        """Grow a disk of a running domain (the image is locked by QEMU)."""
        dom = self._conn.lookupByName(domain)
        dom.blockResize(path, capacity, libvirt.VIR_DOMAIN_BLOCK_RESIZE_BYTES)

    @_reading
    def volume_path(self, pool: str, name: str) -> str:
        return str(self._conn.storagePoolLookupByName(pool).storageVolLookupByName(name).path())

    @_mutating
    def refresh_pool(self, name: str) -> None:
        self._conn.storagePoolLookupByName(name).refresh(0)
