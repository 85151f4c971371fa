"""The executor's workers talk to libvirtd over connections of their own (see
`Libvirt.own_connection`): what libvirtd itself reports as its clients."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from controller.adapter import Libvirt
from tests.conftest import wait_for
from tests.realhost.conftest import URI, Host


def _our_clients() -> set[str]:
    """The ids of libvirtd's clients that are this process, as `virt-admin` lists them."""
    listed = subprocess.run(["virt-admin", "srv-clients-list", "libvirtd"], capture_output=True, text=True,
                            check=True).stdout.splitlines()[2:]
    ours = set()
    for client in (line.split()[0] for line in listed if line.strip()):
        info = subprocess.run(["virt-admin", "client-info", "libvirtd", client], capture_output=True, text=True,
                              check=False).stdout   # a client that left meanwhile has no info
        if f"unix_process_id: {os.getpid()}\n" in info:
            ours.add(client)
    return ours


def test_workers_have_connections_of_their_own_kept_until_close(host: Host) -> None:
    before = _our_clients()
    client = Libvirt(URI)
    try:
        main = _our_clients() - before
        assert len(main) == 1
        holding = threading.Barrier(3)
        read: dict[str, int] = {}

        def worker(name: str) -> None:
            with client.own_connection():
                read[name] = len(client.domains()) + len(client.pools())   # the adapter works on it
                holding.wait(timeout=60)     # both workers hold theirs at once
                holding.wait(timeout=60)     # ...until the main thread has counted

        threads = [threading.Thread(target=worker, args=(name,)) for name in ("a", "b")]
        for thread in threads:
            thread.start()
        holding.wait(timeout=60)
        during = _our_clients() - before
        holding.wait(timeout=60)
        for thread in threads:
            thread.join(timeout=60)
        assert set(read) == {"a", "b"}
        assert len(during) == 3, "the main connection and one for each worker"

        # Kept for the next changes: a later worker opens none.
        later = threading.Thread(target=worker, args=("c",))
        holding = threading.Barrier(2)
        later.start()
        holding.wait(timeout=60)
        assert _our_clients() - before == during
        holding.wait(timeout=60)
        later.join(timeout=60)
    finally:
        client.close()
    assert _our_clients() - before == set(), "close leaves no connection behind"


def test_a_connection_begun_and_abandoned_is_closed_whenever_it_arrives(host: Host) -> None:
    """A command begins connecting before it reads its manifests (Connecting); bad
    manifests abandon it, before or after libvirtd has answered."""
    from controller.adapter import Connecting

    before = _our_clients()
    arrived = Connecting(URI, 30, spares=2)
    wait_for("libvirtd to answer, three times", lambda: len(_our_clients() - before) == 3, timeout=30)
    arrived.abandon()                     # there, not taken: the spares too
    early = Connecting(URI, 30, spares=2)
    early.abandon()                       # most likely before it answers; closed when it does
    failed = Connecting(URI, 30)
    with pytest.raises(ValueError), failed:
        raise ValueError("bad manifests")
    wait_for("the abandoned connections to close", lambda: _our_clients() - before == set(), timeout=30)


def test_a_commands_spare_connections_serve_its_reads_and_workers_and_close_with_it(host: Host) -> None:
    from controller.adapter import Connecting

    before = _our_clients()
    client = Libvirt(URI, connecting=Connecting(URI, 30, spares=2))
    try:
        wait_for("the spares to be handed over", lambda: len(client._idle) == 2, timeout=30)
        assert len(_our_clients() - before) == 3
        client.inventory()                # read on all three
        with client.own_connection():     # a worker takes a spare and opens none
            assert client._conn is not client._main
            assert len(_our_clients() - before) == 3
    finally:
        client.close()
    assert _our_clients() - before == set(), "close leaves no connection behind"


class _Proxy:
    """A socket in front of libvirtd's that passes everything through until `hang`:
    from then on it forwards nothing and answers nothing, as a stopped libvirtd
    (SIGSTOP) would, without stopping the libvirtd every other test shares."""

    def __init__(self, path: str, upstream: str = "/var/run/libvirt/libvirt-sock") -> None:
        self.path, self.upstream = path, upstream
        self.hung = threading.Event()
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(path)
        self.server.listen(16)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return   # closed
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self.upstream)
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        while data := _receive(source):
            if not self.hung.is_set():
                sink.sendall(data)
        for end in (source, sink):
            end.close()

    def close(self) -> None:
        self.server.close()


def _receive(end: socket.socket) -> bytes:
    try:
        return end.recv(65536)
    except OSError:
        return b""


@pytest.mark.parametrize("spares", [0, 2], ids=["one-connection", "kinds-side-by-side"])
def test_a_command_whose_libvirtd_hangs_midway_fails_instead_of_waiting(
        host: Host, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spares: int) -> None:
    """RELIABILITY F2 for the command line: its session has keepalive, as the daemon's
    connections do, so a call to a libvirtd that stops answering fails. With spare
    connections the observation reads on three at once, never two calls on one:
    libvirt 9.0's client leaves the second waiting for ever when keepalive closes the
    connection under both (this test hung so when the reads shared one)."""
    from dataclasses import replace

    from controller import errors
    from controller.adapter import events
    from controller.cli import _connect, _session
    from controller.config import Config
    from controller.observe import observe

    monkeypatch.setattr(events, "KEEPALIVE", (1, 2))   # the command's is 5 s x 3: a slower test
    proxy = _Proxy(str(tmp_path / "libvirt-sock"))
    config = replace(Config(), connect=f"qemu+unix:///system?socket={proxy.path}", state_dir=str(tmp_path / "state"))
    failed: list[BaseException] = []
    try:
        with _session(config, _connect(config, spares=spares)) as session:
            wait_for("the spares", lambda: len(session.client._idle) == spares, timeout=30)
            assert observe(session.client).objects is not None     # answered through the proxy
            proxy.hung.set()

            def call() -> None:
                try:
                    observe(session.client)
                except errors.IaasError as exc:
                    failed.append(exc)

            caller = threading.Thread(target=call, daemon=True)
            caller.start()
            caller.join(timeout=60)
            assert not caller.is_alive(), "a call to a hung libvirtd must fail, not wait for it"
    finally:
        proxy.close()
    assert len(failed) == 1 and isinstance(failed[0], errors.Disconnected), failed
    assert "keepalive" in str(failed[0])
