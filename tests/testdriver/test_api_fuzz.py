"""Whatever the request, the API answers with a status it documents and an error
document that says what was wrong; never a 500, and nothing but valid manifests
ever lands in its directory, and nothing outside it (RELIABILITY S6/S7/B9, by
property: a generated method, path, query, headers and body for each example)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from wsgiref.util import setup_testing_defaults

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from controller.api import Api
from controller.manifest import load
from controller.reconcile import Session
from tests.testdriver import manifests as m
from tests.testdriver import openapi

DOCUMENTED = {200, 201, 202, 400, 401, 404, 405, 409, 411, 413, 422, 503}
SEGMENTS = st.sampled_from(["v1", "manifests", "vms", "vm", "networks", "pools", "volumes", "events", "runs",
                            "status", "metrics", "healthz", "reconcile", "suspend", "resume", "t-web", "lab",
                            "..", ".", "%2e%2e", "a\x00b", "ünï", "x" * 120, "", "lab.yaml", "-lab"]) | st.text(max_size=12)
ROUTES = ["v1/{}", "v1/{}/{}", "v1/{}/{}/{}", "v1/events", "v1/runs", "v1/status", "v1/manifests",
          "v1/manifests/{}", "v1/{}", "metrics", "healthz", "v1/openapi.json"]     # the documented shapes, filled at random
PATHS = st.lists(SEGMENTS, max_size=5) | st.builds(
    lambda route, fill: route.format(*fill).split("/"), st.sampled_from(ROUTES), st.lists(SEGMENTS, min_size=3,
                                                                                          max_size=3))
QUERIES = st.dictionaries(st.sampled_from(["kind", "name", "limit", "dryRun", "before"]),
                          st.sampled_from(["vm", "x", "ten", "-1", "0", "5", "99999999999", "true", "%ff", ""])
                          | st.text(max_size=8), max_size=3).map(urlencode) | st.text(max_size=20)
BODIES = (st.sampled_from([m.NETWORK, m.POOL, m.vm(), m.vm(memory="lots"), "", "{}", "[1, 2", "kind: Network\n"])
          .map(str.encode) | st.binary(max_size=200))
HEADERS = st.dictionaries(st.sampled_from(["IF_MATCH", "IF_NONE_MATCH", "AUTHORIZATION", "CONTENT_TYPE"]),
                          st.sampled_from(["*", '"abc"', "W/\"x\"", "Bearer x", "", ",,", "\x7f"]) | st.text(max_size=20))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Api, Path]]:
    """One application for every example (hypothesis runs them in one test): its
    directory starts empty and may only ever hold what the API accepted."""
    from controller.config import Config

    root = tmp_path_factory.mktemp("fuzz")
    (root / "specs").mkdir()
    config = Config(connect="test:///default", state_dir=str(root / "state"))
    with Session.open(config) as session:   # keeps the test driver's host alive
        api = Api(config, session.store, manifests=str(root / "specs"))
        yield api, root
        api.close()


def call(api: Api, method: str, path: str, query: str, headers: dict[str, str], body: bytes | None
         ) -> tuple[int, dict[str, str], bytes]:
    environ: dict[str, Any] = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query}
    if body is not None:
        environ["CONTENT_LENGTH"] = str(len(body))
        environ["wsgi.input"] = io.BytesIO(body)
    environ.update({f"HTTP_{k}": v for k, v in headers.items()})
    setup_testing_defaults(environ)
    seen: dict[str, Any] = {}

    def start_response(status: str, response_headers: list[tuple[str, str]]) -> None:
        seen["status"], seen["headers"] = int(status.split()[0]), dict(response_headers)

    content = b"".join(api(environ, start_response))
    return seen["status"], seen["headers"], content


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(method=st.sampled_from(["GET", "GET", "GET", "HEAD", "PUT", "PUT", "POST", "DELETE", "PATCH", "OPTIONS"]),
       segments=PATHS, query=QUERIES,
       headers=HEADERS, body=st.none() | BODIES)
@example(method="PUT", segments=["v1", "manifests", "..", "..", "etc", "cron.d", "x"], query="", headers={},
         body=m.NETWORK.encode())
@example(method="PUT", segments=["v1", "manifests", "lab"], query="", headers={}, body=m.NETWORK.encode())
@example(method="DELETE", segments=["v1", "manifests", "lab"], query="", headers={"IF_MATCH": "*"}, body=None)
def test_every_answer_is_documented_and_only_valid_manifests_land(served: tuple[Api, Path], method: str,
                                                                  segments: list[str], query: str,
                                                                  headers: dict[str, str], body: bytes | None) -> None:
    api, root = served
    path = "/" + "/".join(segments)
    status, response_headers, content = call(api, method, path, query, headers, body)
    assert status in DOCUMENTED, (status, content[:300])
    openapi.check(method, path, status, response_headers["Content-Type"], content)
    if status >= 400 and method != "HEAD":
        error = json.loads(content)["error"]
        assert error["code"] == status and error["message"], error
    assert sorted(p.name for p in root.iterdir()) == ["specs", "state"]
    written = [p for p in (root / "specs").iterdir()]
    assert all(p.suffix == ".yaml" and not p.name.startswith(".") for p in written), written
    load([str(root / "specs")])     # valid as a whole, whatever was accepted
