"""The REST API of `iaasctl serve`: what the controller manages, and the manifests it
converges, over HTTP with JSON.

    GET    /healthz                        the API process answers (no token needed)
    GET    /v1/openapi.json                this list as OpenAPI 3.1 (no token needed)
    GET    /metrics                        Prometheus text: daemon, conditions, retries
    GET    /v1/status                      the daemon, as `iaasctl status -o json`
    GET    /v1/{kind}[/{name}]             as `get -o json` / `describe -o json`
    GET    /v1/events?kind=&name=&limit=   as `iaasctl events -o json`, in pages (before=ID)
    GET    /v1/runs?limit=                 the latest apply/delete/daemon runs, in pages
    POST   /v1/{reconcile|suspend|resume}  everything; /v1/{kind}/{name}/{...}: one object
    GET    /v1/manifests[/{name}]          the manifests in the served directory
    PUT    /v1/manifests/{name}            write {name}.yaml (?dryRun=true: check only)
    DELETE /v1/manifests/{name}            remove it (?dryRun=true: check only)

The API converges nothing itself. It writes manifests into one directory (`serve
--manifests DIR`), and the daemon that watches it (`iaasctl run -f DIR`) converges
them, as it would an edit made in a shell. A manifest is checked before it is
written, beside the other files of the directory as they will be, with the loader's
every rule (references across files included): a bad one is answered 422 with every
problem as `file:line: path: message`, and the directory is left as it was. A
removal that would leave the other files invalid (a network still named by a VM) is
answered 409 and removes nothing.

State comes from the state store, which the daemon writes, and from observations of
the host that `Host` makes on a thread of its own: no request waits on libvirt for
longer than `Host.patience` (see there). One writer at a time: the checks and the
write of a manifest are one step, and a write may say which version it replaces
(`If-Match`). `schemas/openapi.json` describes every answer."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode

from controller import errors
from controller.config import Config
from controller.errors import Problem
from controller.adapter import Libvirt
from controller.adapter.events import KEEPALIVE, start_event_loop
from controller.model import Desired, Kind, Ref, parse_kind
from controller.observe import Observed, ParseMemo, observe
from controller.state import StateStore
from controller.status import addresses_from

if TYPE_CHECKING:
    from controller.manifest.files import ManifestFile

log = logging.getLogger("iaasctl.api")

Environ = dict[str, Any]
StartResponse = Callable[..., Any]

MAX_BODY = 1024 * 1024      # a request's body; a file on disk may be larger (4 MiB), as the loader allows
READ_TIMEOUT = 30.0         # seconds a client may take to send a request, or to take an answer
MANIFEST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
CONTROL = ("reconcile", "suspend", "resume")
JSON = "application/json"


@dataclass
class Reply:
    """A response: status, body, content type and extra headers."""

    status: int
    body: bytes
    content_type: str = JSON
    headers: tuple[tuple[str, str], ...] = ()


def reply(status: int, document: object, **kwargs: Any) -> Reply:
    return Reply(status, (json.dumps(document, indent=2, default=str) + "\n").encode(), **kwargs)


class Failure(Exception):
    """A request that cannot be served: answered with `status` and a JSON error document."""

    def __init__(self, status: int, message: str, *, problems: Iterable[Problem] = (),
                 headers: tuple[tuple[str, str], ...] = (), current_version: str | None = None,
                 extra: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.problems = list(problems)
        self.headers = headers
        self.current_version = current_version
        self.extra = extra or {}

    def reply(self) -> Reply:
        error: dict[str, Any] = {"code": self.status, "reason": HTTPStatus(self.status).phrase,
                                 "message": str(self)}
        if self.current_version is not None:
            error["currentVersion"] = self.current_version
        if self.problems:
            error["problems"] = [{"file": p.file, "line": p.line, "path": p.path, "message": p.message,
                                  "text": str(p)} for p in self.problems]
        return reply(self.status, {"error": error, **self.extra}, headers=self.headers)


@dataclass(frozen=True)
class Precondition:
    """What a write expects to replace, from `If-Match` (the version it read: a GET's
    ETag, a write's `version`; `*`: any) and `If-None-Match: *` (nothing: create
    only). A write whose expectation no longer holds (someone wrote in between) is
    refused with 409 and the current version: no update is lost. Without either
    header a write replaces whatever is there."""

    match: tuple[str, ...] | None = None     # versions, or ("*",)
    absent: bool = False

    @classmethod
    def of(cls, environ: Environ) -> Precondition:
        match = environ.get("HTTP_IF_MATCH")
        versions = tuple(v.strip().removeprefix("W/").strip('"') for v in match.split(",")) if match else None
        return cls(versions, environ.get("HTTP_IF_NONE_MATCH", "").strip() == "*")

    def check(self, name: str, current: bytes | None) -> None:
        version = None if current is None else _version(current)
        if self.absent and current is not None:
            raise Failure(409, f"manifest {name} exists (If-None-Match: *); nothing was changed",
                          current_version=version)
        if self.match is not None and (version is None or (self.match != ("*",) and version not in self.match)):
            said = "does not exist" if version is None else f"is at version {version}"
            raise Failure(409, f"manifest {name} {said}, not the one this write expected "
                               f"(If-Match); nothing was changed", current_version=version)


@dataclass(frozen=True)
class Seen:
    """One observation of the host, with the DHCP leases of its running VMs."""

    observed: Observed
    leases: dict[str, list[tuple[str, str]]]
    at: float                   # wall-clock
    stale: bool = False         # the refresh a request waited for did not come in time
    error: str | None = None    # why the last refresh failed, if it did

    def addresses(self, name: str) -> list[tuple[str, str]]:
        return self.leases.get(name, [])

    def about(self) -> dict[str, object]:
        """What an answer says of its source: when the host was observed and, if that
        is older than the request, why (libvirt slow, or gone)."""
        about: dict[str, object] = {"observedAt": _when(self.at)}
        if self.stale or self.error:
            about["stale"] = True
        if self.error:
            about["libvirtError"] = self.error
        return about


class Host:
    """The host as the API reports it. No request calls libvirt: each one has the
    host observed on a thread of its own (joining an observation already under way:
    one at a time, however many requests come) and waits for it at most `patience`
    seconds. Then it answers from the newest observation there is, marked stale if
    that is not the one it waited for. A slow or hung libvirtd makes answers stale,
    never slow (RELIABILITY L8). The connection is kept between observations, with
    keepalive, and opened again after a failure."""

    def __init__(self, config: Config, *, connect: Callable[[str], Libvirt] | None = None,
                 patience: float = 2.0) -> None:
        self.config = config
        self.patience = patience
        self._connect = connect or self._keepalive_connection
        self._lock = threading.Lock()
        self._seen: Seen | None = None
        self._error: str | None = None
        self._refreshed: threading.Event | None = None   # set when the observation under way ends
        self._client: Libvirt | None = None
        self._memo = ParseMemo()

    def snapshot(self) -> Seen:
        with self._lock:
            done = self._refreshed
            if done is None:
                done = self._refreshed = threading.Event()
                threading.Thread(target=self._refresh, args=(done,), name="iaasctl-api-observe", daemon=True).start()
        came = done.wait(self.patience)
        with self._lock:
            seen, error = self._seen, self._error
        if seen is None:
            raise Failure(503, f"libvirt has not answered yet{f': {error}' if error else ''}")
        return seen if came and error is None else replace(seen, stale=True, error=error)

    def _refresh(self, done: threading.Event) -> None:
        try:
            if self._client is None:
                self._client = self._connect(self.config.connect)
            client = self._client
            observed = observe(client, memo=self._memo)
            addresses = addresses_from(client)
            leases = {ref.name: addresses(ref.name) for ref, live in observed.objects.items()
                      if ref.kind is Kind.VM and live.running}
            seen = Seen(observed, leases, time.time())
            with self._lock:
                self._seen, self._error = seen, None
        except errors.IaasError as exc:
            log.warning("observing the host: %s", exc)
            self.close()
            with self._lock:
                self._error = str(exc)
        finally:
            with self._lock:
                self._refreshed = None
            done.set()

    def _keepalive_connection(self, uri: str) -> Libvirt:
        start_event_loop()
        return Libvirt(uri, connect_timeout=self.config.connect_timeout, keepalive=KEEPALIVE)

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()


class Api:
    """The WSGI application. `manifests`: the directory it writes manifests to (None:
    it accepts none); `token`: the bearer token every request but /healthz must carry
    (None: none is asked for; `serve` allows that only on a loopback address)."""

    def __init__(self, config: Config, store: StateStore, *, manifests: str | None = None,
                 token: str | None = None, host: Host | None = None) -> None:
        self.config = config
        self.store = store
        self.host = host or Host(config)
        self.manifests = os.path.abspath(manifests) if manifests else None
        self.token = token
        self._writing = threading.Lock()
        self._counts: dict[tuple[str, int], int] = {}
        self._counting = threading.Lock()

    def close(self) -> None:
        """Close the connection to libvirt; the state store is the caller's."""
        self.host.close()

    def __call__(self, environ: Environ, start_response: StartResponse) -> list[bytes]:
        method = environ.get("REQUEST_METHOD", "GET").upper()
        try:
            answer = self._route(method, environ.get("PATH_INFO", "") or "/", environ)
        except Failure as exc:
            answer = exc.reply()
        except errors.ManifestInvalid as exc:
            answer = Failure(422, "the manifests are invalid; nothing was changed", problems=exc.problems).reply()
        except errors.LibvirtFailure as exc:
            answer = Failure(503, f"libvirt: {exc}").reply()
        except errors.IaasError as exc:
            answer = Failure(400, str(exc)).reply()
        except Exception:   # a bug of ours: the client gets a 500, the log the traceback
            log.exception("%s %s", method, environ.get("PATH_INFO"))
            answer = Failure(500, "internal error; see the server's log").reply()
        with self._counting:
            key = (method, answer.status)
            self._counts[key] = self._counts.get(key, 0) + 1
        body = b"" if method == "HEAD" else answer.body
        headers = [("Content-Type", answer.content_type), ("Content-Length", str(len(answer.body))),
                   *answer.headers]
        start_response(f"{answer.status} {HTTPStatus(answer.status).phrase}", headers)
        return [body]

    # -- routing ------------------------------------------------------------------------------

    def _route(self, method: str, path: str, environ: Environ) -> Reply:
        parts = [p for p in path.split("/") if p]
        if parts == ["healthz"]:
            _allow(method, "GET")
            return Reply(200, b"ok\n", "text/plain; charset=utf-8")
        if parts == ["v1", "openapi.json"]:   # what a client needs before it has a token
            _allow(method, "GET")
            return Reply(200, _openapi(), JSON)
        self._authorize(environ)
        if parts == ["metrics"]:
            _allow(method, "GET")
            return Reply(200, self._metrics().encode(), "text/plain; version=0.0.4; charset=utf-8")
        if not parts or parts[0] != "v1":
            raise Failure(404, f"no such path: {path}")
        query = {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        rest = parts[1:]
        if rest and rest[0] == "manifests":
            return self._manifests(method, rest[1:], query, environ)
        if rest in (["status"], ["events"], ["runs"]):
            _allow(method, "GET")
            return {"status": self._status, "events": self._events, "runs": self._runs}[rest[0]](query)
        if len(rest) == 1 and rest[0] in CONTROL:
            _allow(method, "POST")
            return self._control(rest[0], None)
        if len(rest) == 3 and rest[2] in CONTROL:
            _allow(method, "POST")
            return self._control(rest[2], Ref(_kind(rest[0]), rest[1]))
        if len(rest) in (1, 2):
            _allow(method, "GET")
            return self._objects(_kind(rest[0]), rest[1] if len(rest) == 2 else None)
        raise Failure(404, f"no such path: {path}")

    def _authorize(self, environ: Environ) -> None:
        if self.token is None:
            return
        given = environ.get("HTTP_AUTHORIZATION", "")
        scheme, _, credential = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(credential.strip().encode(), self.token.encode()):
            raise Failure(401, "a bearer token is required (Authorization: Bearer TOKEN)",
                          headers=(("WWW-Authenticate", 'Bearer realm="iaasctl"'),))

    # -- status -------------------------------------------------------------------------------

    def _status(self, _query: dict[str, str]) -> Reply:
        from controller.cli.control import daemon_status

        state = daemon_status(self.config, self.store)
        if self.manifests is not None:
            state["manifests"] = self.manifests
        return reply(200, state)

    def _events(self, query: dict[str, str]) -> Reply:
        kind = _kind(query["kind"]) if query.get("kind") else None
        name = query.get("name")
        if name and kind is None:
            raise Failure(400, "name= needs kind= too")
        limit = _limit(query, 50)
        found = self.store.events(Ref(kind, name) if kind and name else None, kind=kind, limit=limit,
                                  before=_cursor(query))
        items = [{"id": e.id, "time": _when(e.at), "type": e.type, "reason": e.reason, "kind": e.ref.kind.value,
                  "name": e.ref.name, "message": e.message} for e in found]
        return reply(200, _page("/v1/events", query, items, limit, oldest=found[0].id if found else None))

    def _runs(self, query: dict[str, str]) -> Reply:
        limit = _limit(query, 20)
        runs = self.store.runs(limit=limit, before=_cursor(query))
        for run in runs:
            run["started"] = _when(run["started"])
            run["finished"] = _when(run["finished"])
        return reply(200, _page("/v1/runs", query, runs, limit, oldest=runs[-1]["id"] if runs else None))

    def _objects(self, kind: Kind, name: str | None) -> Reply:
        from controller import status

        seen = self.host.snapshot()
        about = seen.about()
        if name is None:
            return reply(200, {"kind": kind.value, **about,
                               "items": status.rows(kind, seen.observed, self.store, seen.addresses)})
        doc = status.describe(Ref(kind, name), seen.observed, self.store, seen.addresses)
        if doc is None:
            raise Failure(404, f"{kind.value}/{name} not found", extra=about)
        return reply(200, {**doc, **about})

    def _control(self, command: str, ref: Ref | None) -> Reply:
        from controller.cli.control import request

        return reply(202, {"message": request(self.config, command, ref, self.store)})

    def _metrics(self) -> str:
        from controller.cli.control import daemon_status

        with self.store.snapshot():
            state = daemon_status(self.config, self.store)
            owned = self.store.statuses()
            retries = self.store.resource_statuses()
            conditions = {ref: self.store.conditions(ref) for ref in retries}
        lines: list[str] = []

        def metric(name: str, kind: str, text: str, samples: Iterable[tuple[dict[str, str], float]]) -> None:
            lines.extend((f"# HELP {name} {text}", f"# TYPE {name} {kind}"))
            lines.extend(f"{name}{_labels(labels)} {_number(value)}" for labels, value in samples)

        metric("iaasctl_daemon_running", "gauge", "1 when a daemon (iaasctl run) holds the state directory.",
               [({}, bool(state["running"]))])
        metric("iaasctl_daemon_connected", "gauge", "1 when the running daemon is connected to libvirt.",
               [({}, bool(state["running"] and state.get("connected")))])
        metric("iaasctl_daemon_converged", "gauge", "1 when the daemon's last pass left the host converged.",
               [({}, bool(state.get("converged")))])
        passes = state.get("passes")
        metric("iaasctl_daemon_passes", "gauge", "Reconcile passes of the daemon's current or last run.",
               [({}, passes if isinstance(passes, int) else 0)])
        counts: dict[str, int] = {}
        for status in owned:
            counts[status.ref.kind.value] = counts.get(status.ref.kind.value, 0) + 1
        metric("iaasctl_managed_objects", "gauge", "Objects iaasctl owns, by kind.",
               [({"kind": kind.value}, counts.get(kind.value, 0)) for kind in Kind])
        metric("iaasctl_condition", "gauge", "A resource's condition (Ready, Stalled, Drifted...): 1 true, 0 false.",
               [({"kind": ref.kind.value, "name": ref.name, "type": c.type, "reason": c.reason}, c.status)
                for ref, found in sorted(conditions.items(), key=_order) for c in found])
        metric("iaasctl_retries", "gauge", "Failed attempts in a row on a resource, reset when it converges.",
               [({"kind": ref.kind.value, "name": ref.name}, status.retries)
                for ref, status in sorted(retries.items(), key=_order)])
        with self._counting:
            served = sorted(self._counts.items())
        metric("iaasctl_api_requests_total", "counter", "Requests this API process answered.",
               [({"method": m, "code": str(code)}, n) for (m, code), n in served])
        return "\n".join(lines) + "\n"

    # -- manifests ---------------------------------------------------------------------------

    def _manifests(self, method: str, rest: list[str], query: dict[str, str], environ: Environ) -> Reply:
        if self.manifests is None:
            raise Failure(404, "this server keeps no manifests: start it with --manifests DIR")
        if not rest:
            _allow(method, "GET")
            return reply(200, {"directory": self.manifests, "items": list(self._listing())})
        name = "/".join(rest)    # `a/b`, `../../etc/cron.d/x`: refused here, never joined to a path
        if not MANIFEST_NAME.fullmatch(name):
            raise Failure(400, f"{name!r} is not a manifest name: letters, digits, '.', '_' and '-', "
                               "at most 100, starting with a letter or digit")
        path = os.path.join(self.manifests, name + ".yaml")
        _allow(method, "GET", "PUT", "DELETE")
        dry_run = query.get("dryRun", "").lower() in ("1", "true", "yes")
        if method in ("GET", "HEAD"):
            data = _read(path)
            if data is None:
                raise Failure(404, f"no manifest {name}: {path} does not exist")
            return Reply(200, data, "application/yaml; charset=utf-8", (("ETag", _etag(data)),))
        wanted = Precondition.of(environ)
        if method == "PUT":
            return self._put(name, path, _body(environ), wanted, dry_run=dry_run)
        return self._delete(name, path, wanted, dry_run=dry_run)

    def _listing(self) -> Iterator[dict[str, object]]:
        from controller.manifest.files import is_manifest_name

        assert self.manifests is not None
        for entry in sorted(os.scandir(self.manifests), key=lambda e: e.name):
            if entry.is_file() and is_manifest_name(entry.name):
                info = entry.stat()
                yield {"name": entry.name.rsplit(".", 1)[0], "path": entry.path, "bytes": info.st_size,
                       "modified": _when(info.st_mtime)}

    def _put(self, name: str, path: str, data: bytes, wanted: Precondition, *, dry_run: bool) -> Reply:
        from controller.manifest.files import ManifestFile, text_of
        from controller.manifest.pipeline import load_files

        if not data.strip():
            raise Failure(400, "the manifest is empty; DELETE /v1/manifests/NAME removes one")
        found: list[Problem] = []
        text = text_of(path, data, found)
        if text is None:   # not UTF-8 (the length was checked before the read)
            raise Failure(422, "the manifest cannot be read; nothing was changed", problems=found)
        written = ManifestFile(path, text)
        with self._writing:
            current = _read(path)
            wanted.check(name, current)
            left, desired = self._check(path, written)
            if not dry_run:
                _write_atomically(path, data)
        specs = load_files([written], partial=True).specs   # it has no problem of its own: _check said so
        log.info("%s %s (%s)", "checked" if dry_run else "wrote", path,
                 ", ".join(f"{s.kind.value}/{s.meta.name}" for s in specs))
        document = {"name": name, "path": path, "version": _version(data), "dryRun": dry_run,
                    "documents": [{"kind": s.kind.value, "name": s.meta.name} for s in specs],
                    **_left(left), **self._watched(), **(self._preview(desired) if dry_run else {})}
        return reply(200 if current is not None or dry_run else 201, document, headers=(("ETag", _etag(data)),))

    def _delete(self, name: str, path: str, wanted: Precondition, *, dry_run: bool) -> Reply:
        with self._writing:
            current = _read(path)
            if current is None:
                raise Failure(404, f"no manifest {name}: {path} does not exist")
            wanted.check(name, current)
            try:
                left, desired = self._check(path, None)
            except errors.ManifestInvalid as exc:
                raise Failure(409, f"removing {name} would leave the other manifests invalid; nothing was changed",
                              problems=exc.problems) from None
            if not dry_run:
                os.unlink(path)
                _sync_directory(os.path.dirname(path))
        log.info("%s %s", "checked the removal of" if dry_run else "removed", path)
        return reply(200, {"name": name, "path": path, "removed": not dry_run, "dryRun": dry_run,
                           **_left(left), **self._watched(), **(self._preview(desired) if dry_run else {})})

    def _check(self, path: str, replacement: ManifestFile | None) -> tuple[list[Problem], Desired | None]:
        """Check the directory's manifests as they would be with `path` replaced (None:
        removed), as the daemon will load them. Raises ManifestInvalid with the problems
        the change brings: any in the file written, and any elsewhere that was not
        there before (a reference to what a removed file declared). Returns the
        problems that were there before and stay, in other files (a directory that is
        already invalid can be mended one file at a time), and, when there are none,
        the directory's desired state."""
        from controller.manifest.files import read_all

        assert self.manifests is not None
        present, unreadable = read_all([self.manifests])
        before = set(self._problems(present, unreadable)[0])
        kept = [f for f in present if os.path.abspath(f.name) != path]
        if replacement is not None:
            kept.append(replacement)
            kept.sort(key=lambda f: f.name.split(os.sep))
        after, desired = self._problems(kept, unreadable)
        brought = [p for p in after if os.path.abspath(p.file) == path or p not in before]
        if brought:
            raise errors.ManifestInvalid(brought)
        return after, desired

    def _problems(self, manifests: list[ManifestFile], unreadable: list[Problem]
                  ) -> tuple[list[Problem], Desired | None]:
        from controller.manifest.pipeline import load_files
        from controller.reconcile import paths_outside

        try:
            desired = load_files(manifests, unreadable, roots=[str(self.manifests)])
        except errors.ManifestInvalid as exc:
            return exc.problems, None
        problems = paths_outside(desired, self.config.state_dir)
        return problems, None if problems else desired

    def _preview(self, desired: Desired | None) -> dict[str, object]:
        """What the daemon would do with the directory as a dry run leaves it: the plan
        against the host as last observed (pure: no libvirt call here), with the
        daemon's default policy (prune, no adoption, the mass-delete guard)."""
        from controller.cli.output import plan_document
        from controller.plan import Policy, plan

        if desired is None:
            return {"planUnavailable": "other manifests have problems (problemsElsewhere): the daemon holds "
                                       "their objects, and no plan of the whole directory can be made"}
        try:
            seen = self.host.snapshot()
        except Failure as exc:
            return {"planUnavailable": str(exc)}
        return {"plan": plan_document(plan(desired, seen.observed, self.store.owned(), policy=Policy())),
                **seen.about()}

    def _watched(self) -> dict[str, object]:
        """Whether a running daemon watches the directory: if none does, a manifest
        written is converged only when one is started on it."""
        from controller.cli.control import daemon_status

        state = daemon_status(self.config, self.store)
        paths = state.get("paths") if state["running"] else None
        watched = isinstance(paths, list) and any(_covers(os.path.abspath(str(p)), str(self.manifests))
                                                  for p in paths)
        result: dict[str, object] = {"watched": watched}
        if not watched:
            result["warning"] = (f"no running daemon watches {self.manifests}: "
                                 f"`iaasctl run -f {self.manifests}` converges it")
        return result


def serve(config: Config, listen: str, *, manifests: str | None, token_file: str | None,
          ready: Callable[[str], None] | None = None, stop: threading.Event | None = None) -> int:
    """Serve the API on `listen` (HOST:PORT; port 0 picks a free one) until `stop` is set
    (SIGTERM in the command). `ready` is told the URL once the socket listens."""
    import socket
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    host, port = _address(listen)
    token = _token(token_file) if token_file else None
    if token is None and not _loopback(host):
        raise errors.ConfigError(f"--listen {listen}: anyone who reaches it could change this host; "
                                 "give --token-file, or listen on a loopback address")
    if manifests is not None and not os.path.isdir(manifests):
        raise errors.ConfigError(f"--manifests {manifests}: not a directory")

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True
        request_queue_size = 128   # the default 5 resets connections when a few dozen clients come at once
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    class Handler(WSGIRequestHandler):
        timeout = READ_TIMEOUT    # a client that sends its request slowly (or never) gives its thread back

        def log_message(self, format: str, *args: Any) -> None:   # noqa: A002 - the base class's name
            log.info("%s %s", self.address_string(), format % args)

    store = StateStore(config.state_dir)
    try:
        api = Api(config, store, manifests=manifests, token=token)
        with make_server(host, port, api, server_class=Server, handler_class=Handler) as server:
            url = f"http://{_bracketed(host)}:{server.server_address[1]}"
            log.info("serving on %s%s", url, f", manifests in {api.manifests}" if api.manifests else "")
            if ready is not None:
                ready(url)
            worker = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                      name="iaasctl-api", daemon=True)
            worker.start()
            (stop or threading.Event()).wait()
            server.shutdown()
            worker.join()
            api.close()
    finally:
        store.close()
    log.info("stopped")
    return 0


# -- helpers ----------------------------------------------------------------------------------


def _left(problems: list[Problem]) -> dict[str, object]:
    """The problems other files had before and still have: the daemon holds back
    their objects until they are mended (a warning, not a refusal)."""
    return {"problemsElsewhere": [str(p) for p in problems]} if problems else {}


def _allow(method: str, *allowed: str) -> None:
    methods = (*allowed, "HEAD") if "GET" in allowed else allowed
    if method not in methods:
        raise Failure(405, f"{method} is not allowed here (allowed: {', '.join(methods)})",
                      headers=(("Allow", ", ".join(methods)),))


def _kind(text: str) -> Kind:
    try:
        return parse_kind(text)
    except errors.ConfigError as exc:
        raise Failure(404, str(exc)) from None


def _order(item: tuple[Ref, object]) -> tuple[str, str]:
    return item[0].kind.value, item[0].name


def _cursor(query: dict[str, str]) -> int | None:
    text = query.get("before")
    if text is None:
        return None
    if not text.isdigit():
        raise Failure(400, f"before={text}: the id of an item of the page after this one")
    return int(text)


def _page(path: str, query: dict[str, str], items: list[dict[str, Any]], limit: int, *,
          oldest: int | None) -> dict[str, object]:
    """A page of a history, and where the older items are when it was full."""
    page: dict[str, object] = {"items": items}
    if len(items) == limit and oldest is not None:
        page["next"] = f"{path}?{urlencode({**query, 'before': oldest})}"
    return page


def _limit(query: dict[str, str], default: int) -> int:
    text = query.get("limit")
    if text is None:
        return default
    if not text.isdigit() or not 1 <= int(text) <= 10_000:
        raise Failure(400, f"limit={text}: a whole number from 1 to 10000")
    return int(text)


def _body(environ: Environ) -> bytes:
    length = environ.get("CONTENT_LENGTH") or ""
    if not length.isdigit():
        raise Failure(411, "a Content-Length is required")
    if int(length) > MAX_BODY:
        raise Failure(413, f"a manifest sent is at most {MAX_BODY // 1024} KiB ({length} bytes sent)")
    data: bytes = environ["wsgi.input"].read(int(length))
    if len(data) < int(length):
        raise Failure(400, f"the body ended after {len(data)} of {length} bytes")
    return data


@functools.cache
def _openapi() -> bytes:
    """This API described (OpenAPI 3.1): `schemas/openapi.json`, shipped with the kinds' schemas."""
    from controller.manifest.schema import schema_dir

    return (schema_dir() / "openapi.json").read_bytes()


def _read(path: str) -> bytes | None:
    """A manifest's bytes; None when there is none. Something else under its name (a
    directory someone made) is a conflict the client cannot resolve by retrying."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise Failure(409, f"{path} is a directory, not a manifest; nothing was changed") from None


def _version(data: bytes) -> str:
    """A manifest's version: a digest of its bytes, so a write by any hand (an editor,
    git) changes it, not only one through the API."""
    return hashlib.sha256(data).hexdigest()[:20]


def _etag(data: bytes) -> str:
    return f'"{_version(data)}"'


def _write_atomically(path: str, data: bytes) -> None:
    """The whole file or the old one, never half: written beside it under a dot name
    (which the daemon's watch and the loader skip), synced, renamed over it."""
    directory, name = os.path.split(path)
    temporary = os.path.join(directory, f".{name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(temporary, "xb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):   # the open itself failed
            os.unlink(temporary)
        raise
    _sync_directory(directory)


def _sync_directory(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _covers(watched: str, directory: str) -> bool:
    return directory == watched or directory.startswith(watched.rstrip(os.sep) + os.sep)


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    escaped = (f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
               .replace("\n", "\\n") for k, v in labels.items())
    return "{" + ",".join(escaped) + "}"


def _number(value: float) -> str:
    return str(int(value)) if isinstance(value, bool) or float(value).is_integer() else repr(float(value))


def _when(timestamp: float | None) -> str | None:
    from controller.status import _when as iso

    return iso(timestamp)


def _address(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise errors.ConfigError(f"--listen {listen}: expected HOST:PORT, e.g. 127.0.0.1:8080")
    return host.strip("[]") or "127.0.0.1", int(port)


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _token(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            token = handle.read().strip()
    except OSError as exc:
        raise errors.ConfigError(f"--token-file {path}: {exc.strerror or exc}") from None
    if len(token) < 16:
        raise errors.ConfigError(f"--token-file {path}: the token is shorter than 16 characters")
    return token

