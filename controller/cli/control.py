"""Commands for the continuous controller: `run` (the daemon), `serve` (its REST
API), and the commands that talk to a running daemon through the state store:
`status`, `events`, `reconcile`, `suspend`, `resume`. A running daemon is woken
with SIGUSR1; without one, the request waits in the store for the next `run`."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from controller import errors
from controller.config import Config
from controller.model import Ref, parse_kind

if TYPE_CHECKING:
    from controller.state import StateStore


def add_parsers(sub: Any, adding: Callable[[str], bool]) -> None:
    """The subparsers of these commands, for the names `adding` accepts."""
    if adding("run"):
        p = sub.add_parser("run", help="keep the host converged: the continuous reconcile daemon")
        p.add_argument("-f", "--filename", dest="paths", action="append", required=True, metavar="PATH")
        p.add_argument("--adopt", action="store_true", help="take over same-named objects iaasctl does not own")
        p.add_argument("--allow-mass-delete", action="store_true",
                       help="allow deleting more than half of the managed objects in one pass")
        p.add_argument("--no-prune", dest="prune", action="store_false")
        p.add_argument("-v", "--verbose", action="store_true", help="log every pass, not only actions")

    if adding("serve"):
        p = sub.add_parser("serve", help="the REST API: status, events and the manifests a daemon converges")
        p.add_argument("--listen", default="127.0.0.1:8080", metavar="HOST:PORT",
                       help="address to listen on (default 127.0.0.1:8080; port 0: any free one)")
        p.add_argument("--manifests", metavar="DIR",
                       help="directory PUT /v1/manifests/NAME writes to; run the daemon on it (run -f DIR)")
        p.add_argument("--token-file", metavar="FILE",
                       help="a file holding the bearer token requests must carry (needed off loopback)")

    if adding("status"):
        p = sub.add_parser("status", help="is a daemon running on this state directory, connected, converged")
        p.add_argument("-o", "--output", choices=("text", "json", "yaml"), default="text")

    if adding("events"):
        p = sub.add_parser("events", help="what happened to objects (newest last)")
        p.add_argument("kind", nargs="?")
        p.add_argument("name", nargs="?")
        p.add_argument("--limit", type=int, default=50)
        p.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table")

    for name, text in (("reconcile", "ask the daemon for a pass now (and retry a failing object at once)"),
                       ("suspend", "stop reconciling an object, or everything; nothing is deleted"),
                       ("resume", "reconcile a suspended object, or everything, again")):
        if adding(name):
            p = sub.add_parser(name, help=text)
            p.add_argument("kind", nargs="?")
            p.add_argument("name", nargs="?")


def cmd_run(args: argparse.Namespace, config: Config) -> int:
    import gc
    import logging
    import signal

    from controller.daemon import Daemon
    from controller.plan import Policy

    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("watchdog").setLevel(logging.WARNING)   # its debug lines are per inotify event
    policy = Policy(adopt=args.adopt, allow_mass_delete=args.allow_mass_delete, prune=args.prune)
    missing = [p for p in args.paths if not os.path.exists(p)]
    if missing:
        raise errors.ConfigError(f"{', '.join(missing)}: no such file or directory")
    gc.enable()   # off for a one-off command (cli.run); a daemon runs for months
    daemon = Daemon(args.paths, config, policy=policy)
    signal.signal(signal.SIGTERM, lambda *_: daemon.stop())
    signal.signal(signal.SIGINT, lambda *_: daemon.stop())
    signal.signal(signal.SIGUSR1, lambda *_: daemon.triggers.poke("requested"))
    return daemon.run()


def cmd_serve(args: argparse.Namespace, config: Config) -> int:
    import logging
    import signal
    import threading

    from controller.api import serve

    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    return serve(config, args.listen, manifests=args.manifests, token_file=args.token_file, stop=stop)


def cmd_events(args: argparse.Namespace, config: Config) -> int:
    from controller.cli import output
    from controller.state import StateStore

    ref = _ref(args.kind, args.name) if args.kind and args.name else None
    kind = parse_kind(args.kind) if args.kind else None
    store = StateStore(config.state_dir)
    try:
        found = store.events(ref, kind=kind, limit=args.limit)
    finally:
        store.close()
    rows = [{"time": _when(e.at), "type": e.type, "reason": e.reason, "object": str(e.ref), "message": e.message}
            for e in found]
    if args.output == "table":
        output.print_table(rows, ("TIME", "TYPE", "REASON", "OBJECT", "MESSAGE"))
    else:
        output.dump(rows, args.output)
    return 0


def cmd_status(args: argparse.Namespace, config: Config) -> int:
    """The daemon's own state, from the store; 0 when a daemon runs, connected."""
    from controller.cli import output

    state = daemon_status(config)
    pid = state.get("pid")
    if args.output != "text":
        output.dump(state, args.output)
    elif not state["running"]:
        print(f"no daemon running on {config.state_dir}")
    else:
        link = "connected to" if state.get("connected") else "DISCONNECTED from"
        paths = state.get("paths")
        watching = ", ".join(map(str, paths)) if isinstance(paths, list) else "?"
        print(f"daemon pid {pid}, {link} {state.get('uri')}, watching {watching}")
        print(f"last pass {state.get('last_pass', 'never')}: "
              f"{'converged' if state.get('converged') else 'not converged'} ({state.get('passes', 0)} passes)")
    return 0 if state["running"] and state.get("connected") else 1


def daemon_status(config: Config, store: StateStore | None = None) -> dict[str, object]:
    """What `status` shows (and `serve` at /v1/status): the state the daemon last
    recorded, whether it runs now (it holds the state directory's lock) and its pid,
    times as ISO 8601."""
    from controller.state import lock_holder

    with _store(config, store) as opened:
        state = opened.daemon_state()
    pid = lock_holder(config.state_dir)
    state["running"] = pid is not None
    if pid is not None:
        state["pid"] = pid
    for key in ("started", "stopped", "since", "last_pass"):
        value = state.get(key)
        if isinstance(value, float):
            state[key] = _when(value)
    return state


def cmd_control(args: argparse.Namespace, config: Config) -> int:
    """reconcile / suspend / resume: record the wish, then wake a running daemon."""
    print(request(config, args.command, _ref(args.kind, args.name) if args.kind else None))
    return 0


def request(config: Config, command: str, ref: Ref | None, store: StateStore | None = None) -> str:
    """reconcile / suspend / resume one object (None: everything): record the wish in
    the store, wake a running daemon, and say what was done."""
    from controller.state import lock_holder

    with _store(config, store) as opened:
        if command == "suspend":
            opened.suspend(ref)
        elif command == "resume":
            opened.resume(ref)
        opened.request_reconcile(ref)
    what = str(ref) if ref else "everything"
    pid = lock_holder(config.state_dir)
    done = {"suspend": "suspended", "resume": "resumed", "reconcile": "reconcile requested for"}[command]
    if pid is None or pid == os.getpid():
        return f"{done} {what}; no daemon is running on {config.state_dir}: it takes effect at the next run"
    import signal

    try:
        os.kill(pid, signal.SIGUSR1)
    except ProcessLookupError:
        return f"{done} {what}; the daemon (pid {pid}) is gone: it takes effect at the next run"
    return f"{done} {what}; told the daemon (pid {pid})"


@contextmanager
def _store(config: Config, store: StateStore | None) -> Iterator[StateStore]:
    """The caller's store, or one opened (and closed) for the call."""
    if store is not None:
        yield store
        return
    from controller.state import StateStore

    opened = StateStore(config.state_dir)
    try:
        yield opened
    finally:
        opened.close()


def _ref(kind: str, name: str | None) -> Ref:
    if not name:
        raise errors.ConfigError(f"{kind}: also name the object (KIND NAME), or give neither for everything")
    return Ref(parse_kind(kind), name)


def _when(timestamp: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(timestamp, tz=UTC).isoformat(timespec="seconds")
