"""libvirt events for the daemon: the event loop thread, lifecycle callbacks, the
close callback and keepalive (which the command line uses too: see KEEPALIVE).

Events only say "look again" (the reconcile is level-triggered), so a callback
hands the daemon a short description and nothing else; it never calls back into
libvirt from the event thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import libvirt

from controller.adapter import Libvirt, _mapped, set_keepalive

# virsh's names for lifecycle events, for the daemon's log.
_DOMAIN_EVENTS = {
    libvirt.VIR_DOMAIN_EVENT_DEFINED: "defined", libvirt.VIR_DOMAIN_EVENT_UNDEFINED: "undefined",
    libvirt.VIR_DOMAIN_EVENT_STARTED: "started", libvirt.VIR_DOMAIN_EVENT_SUSPENDED: "suspended",
    libvirt.VIR_DOMAIN_EVENT_RESUMED: "resumed", libvirt.VIR_DOMAIN_EVENT_STOPPED: "stopped",
    libvirt.VIR_DOMAIN_EVENT_SHUTDOWN: "shutdown", libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED: "pmsuspended",
    libvirt.VIR_DOMAIN_EVENT_CRASHED: "crashed",
}
_NETWORK_EVENTS = {
    libvirt.VIR_NETWORK_EVENT_DEFINED: "defined", libvirt.VIR_NETWORK_EVENT_UNDEFINED: "undefined",
    libvirt.VIR_NETWORK_EVENT_STARTED: "started", libvirt.VIR_NETWORK_EVENT_STOPPED: "stopped",
}
_POOL_EVENTS = {
    libvirt.VIR_STORAGE_POOL_EVENT_DEFINED: "defined", libvirt.VIR_STORAGE_POOL_EVENT_UNDEFINED: "undefined",
    libvirt.VIR_STORAGE_POOL_EVENT_STARTED: "started", libvirt.VIR_STORAGE_POOL_EVENT_STOPPED: "stopped",
}
_CLOSE_REASONS = {
    libvirt.VIR_CONNECT_CLOSE_REASON_ERROR: "error", libvirt.VIR_CONNECT_CLOSE_REASON_EOF: "end of file",
    libvirt.VIR_CONNECT_CLOSE_REASON_KEEPALIVE: "keepalive timeout",
    libvirt.VIR_CONNECT_CLOSE_REASON_CLIENT: "closed by us",
}

OnEvent = Callable[[str, str], None]     # ("VirtualMachine/web", "stopped")
OnClose = Callable[[str], None]          # "end of file"

# Ping libvirtd every 5 s; after 3 pings unanswered the connection is closed, and a
# call waiting on it fails ("connection closed due to keepalive timeout") instead of
# waiting for as long as libvirtd hangs (RELIABILITY F2). Needs the event loop.
KEEPALIVE = (5, 3)

_loop_started = False
_loop_lock = threading.Lock()


def start_event_loop() -> None:
    """Register libvirt's default event loop and run it in a daemon thread. Must happen
    before the connections that want events are opened; idempotent."""
    global _loop_started
    with _loop_lock:
        if _loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()
        threading.Thread(target=_run_loop, name="libvirt-events", daemon=True).start()
        _loop_started = True


def _run_loop() -> None:
    while True:
        libvirt.virEventRunDefaultImpl()


class Subscription:
    """The callbacks registered on one connection. They hold the connection open (the
    test driver keeps its whole in-memory host while they exist), so `close` both
    deregisters them and closes the client."""

    def __init__(self, client: Libvirt, ids: list[tuple[str, int]]) -> None:
        self.client = client
        self._ids = ids

    def close(self) -> None:
        conn = self.client._main
        for kind, callback_id in self._ids:
            try:
                {"domain": conn.domainEventDeregisterAny, "network": conn.networkEventDeregisterAny,
                 "pool": conn.storagePoolEventDeregisterAny}[kind](callback_id)
            except libvirt.libvirtError:
                continue  # a dead connection has no callbacks left to remove
        try:
            conn.unregisterCloseCallback()
        except libvirt.libvirtError:
            pass
        self.client.close()


def subscribe(client: Libvirt, on_event: OnEvent, on_close: OnClose, *, keepalive: tuple[int, int] = KEEPALIVE
              ) -> Subscription:
    """Lifecycle callbacks for domains, networks and pools, a close callback, and
    keepalive (a hung peer is noticed within interval*count seconds). Drivers without
    keepalive (the in-process test driver) simply have none."""
    conn = client._main
    ids: list[tuple[str, int]] = []
    with _mapped():
        ids.append(("domain", conn.domainEventRegisterAny(
            None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE,
            lambda _c, dom, event, _detail, _o: on_event(
                f"VirtualMachine/{dom.name()}", _DOMAIN_EVENTS.get(event, str(event))), None)))
        ids.append(("network", conn.networkEventRegisterAny(
            None, libvirt.VIR_NETWORK_EVENT_ID_LIFECYCLE,
            lambda _c, net, event, _detail, _o: on_event(
                f"Network/{net.name()}", _NETWORK_EVENTS.get(event, str(event))), None)))
        ids.append(("pool", conn.storagePoolEventRegisterAny(
            None, libvirt.VIR_STORAGE_POOL_EVENT_ID_LIFECYCLE,
            lambda _c, pool, event, _detail, _o: on_event(
                f"StoragePool/{pool.name()}", _POOL_EVENTS.get(event, str(event))), None)))
        conn.registerCloseCallback(lambda _c, reason, _o: on_close(_CLOSE_REASONS.get(reason, str(reason))), None)
        set_keepalive(conn, keepalive)
        client.keepalive = keepalive       # and on the workers' connections it opens from now on
    return Subscription(client, ids)
