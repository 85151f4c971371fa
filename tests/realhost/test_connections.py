"""The executor's workers talk to libvirtd over connections of their own (see
`Libvirt.own_connection`): what libvirtd itself reports as its clients."""

from __future__ import annotations

import os
import subprocess
import threading

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
    arrived = Connecting(URI, 30)
    wait_for("libvirtd to answer", lambda: len(_our_clients() - before) == 1, timeout=30)
    arrived.abandon()                     # there, not taken
    early = Connecting(URI, 30)
    early.abandon()                       # most likely before it answers; closed when it does
    failed = Connecting(URI, 30)
    with pytest.raises(ValueError), failed:
        raise ValueError("bad manifests")
    wait_for("the abandoned connections to close", lambda: _our_clients() - before == set(), timeout=30)
