"""`iaasctl serve` beside `iaasctl run` on a real host: a manifest sent to the API is
checked, written, and converged by the daemon into a real (dnsmasq-backed) network;
the API reports it as libvirt has it, and removing the manifest removes it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.realhost.conftest import PREFIX, URI, Host, nat_network, network_active, terminate, wait_for

NET = f"{PREFIX}apinet"
NETWORK = nat_network(NET, 254)


@dataclass
class Served:
    url: str
    logs: dict[str, Path]

    def call(self, method: str, path: str, body: str | None = None) -> tuple[int, Any]:
        data = body.encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                status, raw = answer.status, answer.read().decode()
                kind = answer.headers["Content-Type"]
        except urllib.error.HTTPError as exc:
            status, raw, kind = exc.code, exc.read().decode(), exc.headers["Content-Type"]
        return status, json.loads(raw) if kind == "application/json" else raw


def start(args: list[str], log: Path, host: Host) -> subprocess.Popen[str]:
    env = dict(os.environ, IAASCTL_DOMAIN_TYPE="qemu")
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "controller", "--connect", URI, "--state-dir",
                                 str(host.state), *args], stdout=out, stderr=subprocess.STDOUT, text=True,
                                env=env, stdin=subprocess.DEVNULL)


@pytest.fixture
def served(host: Host, tmp_path: Path) -> Iterator[Served]:
    config = tmp_path / "config.yaml"
    config.write_text("debounce: 0.2\ndelete_grace: 2\nresync_interval: 5\n")
    logs = {"run": tmp_path / "run.log", "serve": tmp_path / "serve.log"}
    processes = [start(["--config", str(config), "run", "-f", str(host.specs)], logs["run"], host),
                 start(["serve", "--listen", "127.0.0.1:0", "--manifests", str(host.specs)], logs["serve"], host)]
    try:
        line = wait_for("the API listening", lambda: next(
            (text for text in logs["serve"].read_text().splitlines() if "serving on " in text), None), timeout=30)
        served = Served(line.split("serving on ", 1)[1].split(",")[0].strip(), logs)
        wait_for("the daemon's first pass", lambda: served.call("GET", "/v1/status")[1].get("passes"), timeout=60)
        yield served
    finally:
        for process, name in zip(processes, logs, strict=True):
            terminate(process, f"iaasctl {name}", logs[name])


def test_a_manifest_sent_to_the_api_is_converged_and_reported(served: Served, host: Host) -> None:
    status, content = served.call("PUT", "/v1/manifests/lab", NETWORK.replace("10.254.0.200", "10.254.1.200"))
    assert status == 422 and "nothing was changed" in content["error"]["message"]
    assert not (host.specs / "lab.yaml").exists()

    status, content = served.call("PUT", "/v1/manifests/lab", NETWORK)
    assert status == 201, content
    assert content["watched"] is True
    wait_for(f"{NET} active on the host", lambda: network_active(NET), timeout=60)

    status, doc = served.call("GET", f"/v1/networks/{NET}")
    assert status == 200 and doc["managed"] is True and doc["live"]["state"] == "active"
    assert doc["source"].endswith("lab.yaml")
    wait_for(f"{NET} Ready", lambda: 'iaasctl_condition{kind="Network",name="' + NET
             + '",type="Ready",reason="Converged"} 1' in served.call("GET", "/metrics")[1].splitlines(), timeout=30)
    metrics = served.call("GET", "/metrics")[1].splitlines()
    assert "iaasctl_daemon_running 1" in metrics and "iaasctl_daemon_connected 1" in metrics
    assert 'iaasctl_managed_objects{kind="Network"} 1' in metrics

    status, content = served.call("POST", f"/v1/networks/{NET}/reconcile")
    assert status == 202 and "told the daemon" in content["message"]

    assert served.call("DELETE", "/v1/manifests/lab")[0] == 200
    wait_for(f"{NET} deleted by the daemon", lambda: served.call("GET", f"/v1/networks/{NET}")[0] == 404,
             timeout=60)
    assert not network_active(NET)
