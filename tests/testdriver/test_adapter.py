"""The adapter maps libvirt's errors by code to our own exceptions, with the original chained."""

from __future__ import annotations

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
