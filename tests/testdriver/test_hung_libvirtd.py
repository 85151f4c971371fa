"""A hung libvirtd (RELIABILITY F2) as libvirt's own client meets it: a socket that
accepts connections and never answers. libvirt's open has no deadline of its own, so
without ours a command, or the daemon's reconnect, would wait for as long as the hang."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from controller import errors
from controller.adapter import Libvirt
from controller.config import Config
from controller.daemon import Daemon
from tests.conftest import wait_for


@pytest.fixture
def hung_uri(tmp_path: Path) -> Iterator[str]:
    """A libvirt URI whose daemon accepts and never answers (the kernel queues the
    connection; nothing reads it). Closing the socket at the end lets any client
    still waiting fail."""
    path = tmp_path / "hung-libvirt-sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(16)
    try:
        yield f"qemu+unix:///system?socket={path}"
    finally:
        server.close()


def test_a_command_fails_with_a_clear_error_instead_of_waiting(hung_uri: str) -> None:
    with pytest.raises(errors.Disconnected) as caught:
        Libvirt(hung_uri, connect_timeout=0.5)
    assert "did not answer within 0.5 s" in str(caught.value)
    assert caught.value.transient


def test_the_daemon_keeps_retrying_and_still_stops_on_request(hung_uri: str, tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="iaasctl")
    config = replace(Config(), connect=hung_uri, connect_timeout=0.5, state_dir=str(tmp_path / "state"))
    (tmp_path / "specs").mkdir()
    daemon = Daemon([str(tmp_path / "specs")], config)
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(daemon.run()), daemon=True)
    thread.start()
    try:
        wait_for("two attempts that libvirt did not answer", lambda: sum(
            "did not answer" in r.getMessage() for r in caplog.records) >= 2, timeout=30)
    finally:
        daemon.stop()
        thread.join(timeout=30)
    assert not thread.is_alive(), "a daemon whose libvirtd hangs must still stop when asked"
    assert result == [0]


@pytest.mark.parametrize("command", ["plan", "apply", "delete"])
def test_a_command_connects_while_it_reads_its_manifests_and_bad_ones_are_reported_first(
        hung_uri: str, tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The connection is begun before the manifests are read; bad manifests are the
    error, at once, however long libvirt takes; good ones meet the deadline."""
    from controller.cli import main

    (tmp_path / "config.yaml").write_text("connect_timeout: 0.5\n")
    specs = tmp_path / "specs"
    specs.mkdir()
    pool = "apiVersion: iaas/v1\nkind: StoragePool\nmetadata: {name: p}\nspec: {type: dir, path: PATH}\n"
    (specs / "pool.yaml").write_text(pool.replace("PATH", "7"))
    common = ["--connect", hung_uri, "--config", str(tmp_path / "config.yaml"), "--state-dir", str(tmp_path / "s")]
    args = [*common, command, "-f", str(specs), *(["--yes"] if command != "plan" else [])]
    assert main(args) == 1
    bad = capsys.readouterr().err
    assert "pool.yaml:4" in bad and "did not answer" not in bad

    (specs / "pool.yaml").write_text(pool.replace("PATH", "/p"))
    assert main(args) == 1
    assert "libvirt did not answer within 0.5 s" in capsys.readouterr().err
