"""The REST API (`iaasctl serve`) on libvirt's test driver: status and objects as
`get` and `describe` show them, manifests checked before they are written, and a
daemon that converges what was written.

Most tests call the WSGI application directly (what a server would hand it); one
runs the real server on a socket, and one the `serve` command as a process."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest

from controller import errors
from controller.adapter import Libvirt
from controller.api import Api, Host, serve
from controller.manifest import load
from controller.model import Kind, Ref
from controller.plan import Policy
from controller.reconcile import Session, apply
from tests.conftest import REPO, wait_for
from tests.testdriver import manifests as m
from tests.testdriver import openapi

BAD_MEMORY = m.vm(memory="lots")


class Client:
    """Requests to the application, answered as (status, headers, JSON or text)."""

    def __init__(self, api: Api) -> None:
        self.api = api

    def __call__(self, method: str, path: str, body: str | bytes | None = None,
                 headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
        """The answer's status, headers and content (JSON decoded)."""
        path, _, query = path.partition("?")
        environ: dict[str, Any] = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query}
        data = body.encode() if isinstance(body, str) else body
        if data is not None:
            environ["CONTENT_LENGTH"] = str(len(data))
            environ["wsgi.input"] = io.BytesIO(data)
        for name, value in (headers or {}).items():
            environ["HTTP_" + name.upper().replace("-", "_")] = value
        setup_testing_defaults(environ)
        seen: dict[str, Any] = {}

        def start_response(status: str, response_headers: list[tuple[str, str]]) -> None:
            seen["status"], seen["headers"] = int(status.split()[0]), dict(response_headers)

        data = b"".join(self.api(environ, start_response))
        openapi.check(method, path, seen["status"], seen["headers"]["Content-Type"], data)
        raw = data.decode()
        content = json.loads(raw) if raw and seen["headers"]["Content-Type"] == "application/json" else raw
        return seen["status"], seen["headers"], content


@pytest.fixture
def specs(tmp_path: Path) -> Path:
    directory = tmp_path / "specs"
    directory.mkdir()
    return directory


@pytest.fixture
def client(session: Session, specs: Path) -> Iterator[Client]:
    api = Api(session.config, session.store, manifests=str(specs))
    yield Client(api)
    api.close()     # its connection would keep the test driver's host alive for the next test


def problems(content: dict[str, Any]) -> list[str]:
    return [p["text"] for p in content["error"]["problems"]]


def test_health_unknown_paths_and_wrong_methods(client: Client) -> None:
    assert client("GET", "/healthz")[::2] == (200, "ok\n")
    status, _, content = client("GET", "/v2/vms")
    assert status == 404 and content["error"]["message"] == "no such path: /v2/vms"
    status, headers, content = client("DELETE", "/v1/vms")
    assert status == 405 and headers["Allow"] == "GET, HEAD"
    status, _, content = client("GET", "/v1/gadgets")
    assert status == 404 and "unknown kind 'gadgets'" in content["error"]["message"]


def test_objects_are_listed_and_described_as_get_and_describe_show_them(client: Client, session: Session,
                                                                     specs: Path) -> None:
    status, _, content = client("GET", "/v1/vms")
    assert status == 200
    assert [(r["name"], r["managed"], r["state"]) for r in content["items"]] == [("test", "no", "running")]

    (specs / "stack.yaml").write_text("---\n".join(m.stack().values()))
    session_apply(session, specs)
    rows = {r["name"]: r for r in client("GET", "/v1/virtualmachines")[2]["items"]}
    assert rows["t-web"]["managed"] == "yes" and rows["t-web"]["state"] == "running"
    assert rows["t-web"]["memory"] == "256MiB"

    status, _, doc = client("GET", "/v1/vm/t-web")
    assert status == 200
    assert doc["managed"] is True and doc["desired"]["spec"]["memory"] == "256MiB"
    assert doc["live"]["state"] == "running"
    status, _, content = client("GET", "/v1/vms/t-nothing")
    assert status == 404 and content["error"]["message"] == "VirtualMachine/t-nothing not found"
    status, headers, content = client("HEAD", "/v1/networks/t-lab")
    assert (status, content) == (200, "") and int(headers["Content-Length"]) > 0


def session_apply(session: Session, specs: Path) -> None:
    result = apply(session, load([str(specs)]), policy=Policy())
    assert result.converged, result


class _Hanging(Libvirt):
    """Our adapter with one fault: listing the host waits until the test lets it go, as
    a hung libvirtd would until keepalive gave up on it."""

    go = threading.Event()

    def inventory(self):  # type: ignore[no-untyped-def]
        assert type(self).go.wait(30), "the test never let the listing go"
        return super().inventory()


def test_a_hung_libvirt_makes_answers_stale_never_slow(session: Session) -> None:
    _Hanging.go = threading.Event()
    api = Api(session.config, session.store, host=Host(session.config, connect=_Hanging, patience=0.2))
    client = Client(api)
    status, _, content = client("GET", "/v1/vms")
    assert status == 503 and content["error"]["message"] == "libvirt has not answered yet"
    assert client("GET", "/v1/status")[0] == 200           # what the store holds answers at once
    _Hanging.go.set()
    status, _, content = wait_for("an answer once libvirt lists", lambda: (a := client("GET", "/v1/vms"))[0] == 200 and a)
    assert [r["name"] for r in content["items"]] == ["test"] and "stale" not in content

    _Hanging.go.clear()     # hung again: the last observation, said to be old
    status, _, content = client("GET", "/v1/vms")
    assert status == 200 and content["stale"] is True and [r["name"] for r in content["items"]] == ["test"]
    _Hanging.go.set()
    api.close()


def test_a_valid_manifest_is_written_whole_and_listed(client: Client, specs: Path) -> None:
    status, _, content = client("PUT", "/v1/manifests/lab", m.NETWORK)
    assert status == 201
    assert content["documents"] == [{"kind": "Network", "name": "t-lab"}]
    assert content["watched"] is False and "iaasctl run -f" in content["warning"]
    assert (specs / "lab.yaml").read_text() == m.NETWORK
    assert [p.name for p in specs.iterdir()] == ["lab.yaml"]     # no temporary file left behind

    assert client("GET", "/v1/manifests/lab")[::2] == (200, m.NETWORK)
    listing = client("GET", "/v1/manifests")[2]
    assert [(i["name"], i["bytes"]) for i in listing["items"]] == [("lab", len(m.NETWORK))]

    replaced = m.NETWORK.replace("10.77.0.200", "10.77.0.210")
    assert client("PUT", "/v1/manifests/lab", replaced)[0] == 200
    assert (specs / "lab.yaml").read_text() == replaced


def test_an_invalid_manifest_is_refused_with_every_problem_and_changes_nothing(client: Client, specs: Path) -> None:
    for name, text in (("pool", m.POOL), ("volumes", m.VOLUMES), ("lab", m.NETWORK), ("web", m.vm())):
        assert client("PUT", f"/v1/manifests/{name}", text)[0] == 201
    before = sorted((p.name, p.read_text()) for p in specs.iterdir())

    status, _, content = client("PUT", "/v1/manifests/web", BAD_MEMORY)
    assert status == 422
    assert content["error"]["message"] == "the manifests are invalid; nothing was changed"
    line = BAD_MEMORY.splitlines().index("  memory: lots") + 1
    [found] = problems(content)
    assert found.startswith(f"{specs}/web.yaml:{line}: spec.memory: ") and "lots" in found
    assert sorted((p.name, p.read_text()) for p in specs.iterdir()) == before


def test_a_dry_run_shows_what_the_daemon_would_do(client: Client, session: Session, specs: Path) -> None:
    for name, text in m.stack().items():
        (specs / name).write_text(text)
    session_apply(session, specs)
    status, _, content = client("PUT", "/v1/manifests/web?dryRun=true", m.vm(memory="512MiB"))
    assert status == 200
    [change] = content["plan"]["changes"]
    assert (change["kind"], change["name"], change["action"]) == ("VirtualMachine", "t-web", "update")
    assert [(f["path"], f["old"], f["new"]) for f in change["fields"]] == [("spec.memory", "256MiB", "512MiB")]
    assert (specs / "web.yaml").read_text() == m.vm()

    status, _, content = client("DELETE", "/v1/manifests/web?dryRun=true")
    actions = {(c["name"], c["action"]) for c in content["plan"]["changes"]}
    assert ("t-web", "delete") in actions and (specs / "web.yaml").exists()

    (specs / "broken.yaml").write_text(BAD_MEMORY.replace("t-web", "t-other"))
    content = client("PUT", "/v1/manifests/web?dryRun=true", m.vm())[2]
    assert "plan" not in content and "problemsElsewhere" in content["planUnavailable"]


def test_references_are_checked_across_the_directorys_files(client: Client, specs: Path) -> None:
    status, _, content = client("PUT", "/v1/manifests/web", m.vm())
    assert status == 422
    assert any("t-lab" in text and "web.yaml" in text for text in problems(content))
    assert not (specs / "web.yaml").exists()
    for name, text in (("pool", m.POOL), ("volumes", m.VOLUMES), ("lab", m.NETWORK)):
        assert client("PUT", f"/v1/manifests/{name}", text)[0] == 201
    assert client("PUT", "/v1/manifests/web", m.vm())[0] == 201

    status, _, content = client("DELETE", "/v1/manifests/lab")
    assert status == 409 and "nothing was changed" in content["error"]["message"]
    assert any("t-lab" in text for text in problems(content))
    assert (specs / "lab.yaml").exists()
    assert client("DELETE", "/v1/manifests/web")[0] == 200
    assert client("DELETE", "/v1/manifests/lab")[2]["removed"] is True
    assert sorted(p.name for p in specs.iterdir()) == ["pool.yaml", "volumes.yaml"]
    assert client("DELETE", "/v1/manifests/lab")[0] == 404


def test_a_directory_already_invalid_can_be_mended_one_file_at_a_time(client: Client, specs: Path) -> None:
    (specs / "web.yaml").write_text(m.vm())            # written by hand: what it refers to is not there
    status, _, content = client("PUT", "/v1/manifests/pool", m.POOL)
    assert status == 201
    assert any("web.yaml" in text and "t-lab" in text for text in content["problemsElsewhere"])
    assert client("PUT", "/v1/manifests/volumes", m.VOLUMES)[0] == 201
    status, _, content = client("PUT", "/v1/manifests/lab", m.NETWORK)
    assert status == 201 and "problemsElsewhere" not in content
    assert client("PUT", "/v1/manifests/lab", m.NETWORK.replace("t-lab", "t-other"))[0] == 422


def test_a_dry_run_checks_and_writes_or_removes_nothing(client: Client, specs: Path) -> None:
    status, _, content = client("PUT", "/v1/manifests/lab?dryRun=true", m.NETWORK)
    assert (status, content["dryRun"], content["documents"]) == (200, True, [{"kind": "Network", "name": "t-lab"}])
    assert [(c["kind"], c["name"], c["action"]) for c in content["plan"]["changes"]] == [
        ("Network", "t-lab", "create")]
    assert "observedAt" in content
    assert not (specs / "lab.yaml").exists()
    assert client("PUT", "/v1/manifests/web?dryRun=true", BAD_MEMORY)[0] == 422
    (specs / "lab.yaml").write_text(m.NETWORK)
    assert client("DELETE", "/v1/manifests/lab?dryRun=1")[2]["removed"] is False
    assert (specs / "lab.yaml").read_text() == m.NETWORK


@pytest.mark.parametrize(("path", "body", "status", "message"), [
    ("/v1/manifests/..", m.NETWORK, 400, "'..' is not a manifest name: letters, digits, '.', '_' and '-', "
                                         "at most 100, starting with a letter or digit"),
    ("/v1/manifests/../../etc/cron.d/x", m.NETWORK, 400, "'../../etc/cron.d/x' is not a manifest name: letters, "
                                                          "digits, '.', '_' and '-', at most 100, starting with a "
                                                          "letter or digit"),
    ("/v1/manifests/lab", None, 411, "a Content-Length is required"),
    ("/v1/manifests/lab", "  \n", 400, "the manifest is empty; DELETE /v1/manifests/NAME removes one"),
    ("/v1/manifests/lab", b"kind: \xff\n", 422, "the manifest cannot be read; nothing was changed"),
])
def test_bad_requests_say_what_is_wrong_and_write_nothing(client: Client, specs: Path, path: str,
                                                           body: str | bytes | None, status: int,
                                                           message: str) -> None:
    answer = client("PUT", path, body)
    assert (answer[0], answer[2]["error"]["message"]) == (status, message)
    assert list(specs.iterdir()) == []


def test_a_directory_under_a_manifests_name_is_a_conflict(client: Client, specs: Path) -> None:
    (specs / "lab.yaml").mkdir()
    for method, body in (("GET", None), ("PUT", m.NETWORK), ("DELETE", None)):
        status, _, content = client(method, "/v1/manifests/lab", body)
        assert (status, content["error"]["message"]) == (409, f"{specs}/lab.yaml is a directory, not a manifest; "
                                                              "nothing was changed")
    assert (specs / "lab.yaml").is_dir()


def test_an_oversized_manifest_is_refused_before_it_is_read(client: Client) -> None:
    environ = {"REQUEST_METHOD": "PUT", "PATH_INFO": "/v1/manifests/big", "CONTENT_LENGTH": str((1 << 20) + 1),
               "wsgi.input": io.BytesIO(b"")}      # nothing to read: the length alone decides
    setup_testing_defaults(environ)
    statuses: list[str] = []
    body = b"".join(client.api(environ, lambda status, headers: statuses.append(status)))
    assert statuses == ["413 Request Entity Too Large"] and b"at most 1024 KiB" in body


def test_a_write_from_a_stale_version_is_refused_and_loses_no_update(client: Client, specs: Path) -> None:
    status, headers, content = client("PUT", "/v1/manifests/lab", m.NETWORK, {"If-None-Match": "*"})
    assert status == 201 and headers["ETag"] == f'"{content["version"]}"'
    first = client("GET", "/v1/manifests/lab")[1]["ETag"]
    assert first == headers["ETag"]
    assert client("PUT", "/v1/manifests/lab", m.NETWORK, {"If-None-Match": "*"})[0] == 409

    theirs = m.NETWORK.replace("10.77.0.200", "10.77.0.201")      # two clients read `first`; one writes
    status, _, content = client("PUT", "/v1/manifests/lab", theirs, {"If-Match": first})
    assert status == 200
    mine = m.NETWORK.replace("10.77.0.200", "10.77.0.202")
    status, _, refused = client("PUT", "/v1/manifests/lab", mine, {"If-Match": first})
    assert status == 409 and refused["error"]["currentVersion"] == content["version"]
    assert "nothing was changed" in refused["error"]["message"]
    assert (specs / "lab.yaml").read_text() == theirs
    assert client("DELETE", "/v1/manifests/lab", headers={"If-Match": first})[0] == 409
    assert client("PUT", "/v1/manifests/lab", mine, {"If-Match": f'"{content["version"]}"'})[0] == 200
    assert client("DELETE", "/v1/manifests/lab", headers={"If-Match": "*"})[0] == 200
    assert client("PUT", "/v1/manifests/lab", mine, {"If-Match": "*"})[0] == 409   # nothing there to match
    assert not (specs / "lab.yaml").exists()


def test_without_a_manifest_directory_no_manifest_is_accepted(session: Session) -> None:
    status, _, content = Client(Api(session.config, session.store))("PUT", "/v1/manifests/lab", m.NETWORK)
    assert status == 404 and "--manifests DIR" in content["error"]["message"]


def test_histories_come_in_pages(client: Client, session: Session) -> None:
    web = Ref(Kind.VM, "t-web")
    for number in range(5):
        session.store.add_event(web, "Normal", "Started", f"start {number}")
    pages, path = [], "/v1/events?kind=vm&name=t-web&limit=2"
    while path:
        status, _, page = client("GET", path)
        assert status == 200
        pages.append([e["message"] for e in page["items"]])
        path = page.get("next")
    assert pages == [["start 3", "start 4"], ["start 1", "start 2"], ["start 0"]]
    assert client("GET", "/v1/events?before=x")[0] == 400
    assert client("GET", "/v1/runs?limit=10001")[0] == 400


def test_the_description_covers_every_route_with_valid_schemas() -> None:
    from jsonschema import Draft202012Validator

    doc = openapi.document()
    for schema in doc["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
    routes = {path for path in doc["paths"]}
    assert {"/healthz", "/metrics", "/v1/status", "/v1/events", "/v1/runs", "/v1/{kind}", "/v1/{kind}/{name}",
            "/v1/manifests", "/v1/manifests/{name}", "/v1/openapi.json"} <= routes
    assert all(f"{path}/{verb}" in routes for path in ("/v1", "/v1/{kind}/{name}")
               for verb in ("reconcile", "suspend", "resume"))


def test_the_description_is_served_without_a_token(session: Session) -> None:
    client = Client(Api(session.config, session.store, token="a-token-of-sixteen"))
    status, _, content = client("GET", "/v1/openapi.json")
    assert status == 200 and content == openapi.document()
    assert client("GET", "/v1/status")[0] == 401


def test_suspend_resume_and_reconcile_are_recorded(client: Client, session: Session) -> None:
    status, _, content = client("POST", "/v1/vms/t-web/suspend")
    assert status == 202 and content["message"].startswith("suspended VirtualMachine/t-web")
    assert session.store.suspended() == (False, frozenset({Ref(Kind.VM, "t-web")}))
    assert client("GET", "/v1/vms/t-web/suspend")[0] == 405
    assert client("POST", "/v1/resume")[0] == 202
    assert session.store.suspended() == (False, frozenset())
    assert client("POST", "/v1/reconcile")[0] == 202
    assert None in session.store.take_requests()


def test_metrics_in_prometheus_text(client: Client, session: Session) -> None:
    web = Ref(Kind.VM, "t-web")
    session.store.set_conditions(web, {"Ready": (False, "Failing", 'said "no"'),
                                       "Stalled": (True, 'Back"off', "waiting")})
    from controller.state import ResourceStatus

    session.store.record_pass(forget=(), conditions={}, daemon={"passes": 7, "converged": False},
                              statuses=[ResourceStatus(web, "g1", None, 3, None, False, "boom")])
    client("GET", "/healthz")
    status, headers, text = client("GET", "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    lines = text.splitlines()
    assert "iaasctl_daemon_running 0" in lines and "iaasctl_daemon_passes 7" in lines
    assert 'iaasctl_condition{kind="VirtualMachine",name="t-web",type="Ready",reason="Failing"} 0' in lines
    assert 'iaasctl_condition{kind="VirtualMachine",name="t-web",type="Stalled",reason="Back\\"off"} 1' in lines
    assert 'iaasctl_retries{kind="VirtualMachine",name="t-web"} 3' in lines
    assert 'iaasctl_managed_objects{kind="VirtualMachine"} 0' in lines
    assert 'iaasctl_api_requests_total{method="GET",code="200"} 1' in lines
    assert "# TYPE iaasctl_api_requests_total counter" in lines


def test_status_events_and_runs(client: Client, session: Session, specs: Path) -> None:
    (specs / "stack.yaml").write_text("---\n".join(m.stack().values()))
    session_apply(session, specs)
    session.store.add_event(Ref(Kind.VM, "t-web"), "Normal", "Created", "created")
    status = client("GET", "/v1/status")[2]
    assert status["running"] is False and status["manifests"] == str(specs)
    events = client("GET", "/v1/events?kind=vm&name=t-web")[2]["items"]
    assert [(e["kind"], e["name"], e["reason"]) for e in events] == [("VirtualMachine", "t-web", "Created")]
    runs = client("GET", "/v1/runs?limit=1")[2]["items"]
    assert len(runs) == 1 and runs[0]["command"] == "apply" and runs[0]["result"] == "converged"
    assert client("GET", "/v1/runs?limit=0")[0] == 400
    assert client("GET", "/v1/events?name=t-web")[0] == 400


def test_a_daemon_converges_the_manifests_the_api_writes(start_daemon, session: Session) -> None:  # type: ignore[no-untyped-def]
    run = start_daemon({})
    api = Api(session.config, session.store, manifests=str(run.specs))
    client = Client(api)
    for name, text in m.stack().items():
        status, _, content = client("PUT", f"/v1/manifests/{name.removesuffix('.yaml')}", text)
        assert status == 201, content
        assert content["watched"] is True and "warning" not in content
    wait_for("t-web running under the daemon",
             lambda: client("GET", "/v1/vms/t-web")[2].get("live", {}).get("state") == "running", timeout=30)
    wait_for("t-web Ready in the metrics", lambda: 'iaasctl_condition{kind="VirtualMachine",name="t-web",'
             'type="Ready",reason="Converged"} 1' in client("GET", "/metrics")[2].splitlines(), timeout=30)
    assert client("DELETE", "/v1/manifests/web")[0] == 200
    wait_for("t-web deleted by the daemon", lambda: client("GET", "/v1/vms/t-web")[0] == 404, timeout=30)
    api.close()


TOKEN = "canary-7f3a9c-token-canary"


@pytest.fixture
def server(session: Session, specs: Path, tmp_path: Path) -> Iterator[Callable[..., tuple[int, str]]]:
    """The real server on a free loopback port, in a thread, with a token; yields a
    request function: (method, path, body, token) -> (status, body text)."""
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    urls: list[str] = []
    stop = threading.Event()
    thread = threading.Thread(target=serve, args=(session.config, "127.0.0.1:0"), daemon=True,
                              kwargs=dict(manifests=str(specs), token_file=str(token), ready=urls.append, stop=stop))
    thread.start()

    def call(method: str, path: str, body: str | None = None, token: str | None = TOKEN) -> tuple[int, str]:
        request = urllib.request.Request(urls[0] + path, data=body.encode() if body is not None else None,
                                         method=method, headers={"Authorization": f"Bearer {token}"} if token else {})
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    try:
        wait_for("the server listening", lambda: urls)
        yield call
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive()


def test_the_server_asks_for_its_token_and_never_shows_it(server, specs: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level("DEBUG")
    assert server("GET", "/healthz", token=None) == (200, "ok\n")
    answers = [server("GET", "/v1/status", token=None), server("GET", "/v1/status", token="wrong-wrong-wrong"),
               server("PUT", "/v1/manifests/lab", m.NETWORK.replace("10.77.0.200", "10.78.0.1"))]
    assert [status for status, _ in answers] == [401, 401, 422]
    status, body = server("GET", "/v1/status")
    assert status == 200 and json.loads(body)["manifests"] == str(specs)
    answers += [(status, body), server("GET", "/metrics"), server("GET", "/v1/events")]
    assert all(TOKEN not in body for _, body in answers)
    assert TOKEN not in caplog.text and "GET /v1/status" in caplog.text


def test_fifty_clients_at_once_get_no_server_error(server, specs: Path) -> None:  # type: ignore[no-untyped-def]
    """RELIABILITY L5, bounded to a few seconds: readers and writers together, four
    writers on each name; every answer is a success (no 5xx, no locked database),
    and the directory ends valid."""
    from concurrent.futures import ThreadPoolExecutor

    def client(number: int) -> list[int]:
        statuses = []
        for round_ in range(8):
            if number % 2:
                statuses.append(server("GET", "/v1/status" if round_ % 2 else "/metrics")[0])
            else:
                name = f"net{number // 2 % 6}"
                octet = 10 + number // 2 % 6
                text = m.NETWORK.replace("t-lab", f"t-lab{octet}").replace("10.77.", f"10.{octet}.")
                statuses.append(server("PUT", f"/v1/manifests/{name}", text)[0])
        return statuses

    with ThreadPoolExecutor(50) as pool:
        seen = [status for statuses in pool.map(client, range(50)) for status in statuses]
    assert len(seen) == 400 and set(seen) <= {200, 201}, sorted(set(seen))
    assert sorted(p.name for p in specs.iterdir()) == [f"net{i}.yaml" for i in range(6)]
    load([str(specs)])   # valid as a whole


@pytest.mark.parametrize(("listen", "token", "message"), [
    ("0.0.0.0:8080", None, "--listen 0.0.0.0:8080: anyone who reaches it could change this host"),
    ("127.0.0.1", None, "--listen 127.0.0.1: expected HOST:PORT"),
    ("127.0.0.1:0", "short", "the token is shorter than 16 characters"),
])
def test_serve_refuses_an_unsafe_or_unusable_setup(session: Session, tmp_path: Path, listen: str,
                                                   token: str | None, message: str) -> None:
    token_file = None
    if token is not None:
        token_file = tmp_path / "token"
        token_file.write_text(token)
    with pytest.raises(errors.ConfigError, match=message.replace("(", r"\(")):
        serve(session.config, listen, manifests=None, token_file=str(token_file) if token_file else None)


@pytest.fixture
def serve_process(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []

    def start(*args: str) -> subprocess.Popen[str]:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        process = subprocess.Popen(
            [sys.executable, "-m", "controller", "--connect", "test:///default", "--state-dir",
             str(tmp_path / "state"), "serve", "--listen", "127.0.0.1:0", *args],
            stderr=subprocess.PIPE, text=True, env=env)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()


def test_the_serve_command_says_where_it_listens_and_stops_on_sigterm(serve_process, specs: Path) -> None:
    process = serve_process("--manifests", str(specs))
    assert process.stderr is not None
    line = process.stderr.readline()
    assert "serving on http://127.0.0.1:" in line and f"manifests in {specs}" in line
    url = line.split("serving on ", 1)[1].split(",")[0].strip()
    with urllib.request.urlopen(url + "/v1/vms", timeout=10) as answer:
        names = [r["name"] for r in json.load(answer)["items"]]
    assert names == ["test"]   # the test driver's own domain: a process has its own in-memory host
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=10) == 0
