"""The `iaasctl` command line: parse arguments, call the pipeline, print, exit.

Exit statuses are part of the contract (DESIGN.md): validate 0/1; plan 0 no
changes, 2 changes, 1 error; apply 0 converged, 1 otherwise; get 0; describe 0/1.
`plan` is apply stopped before execute, nothing more.
"""

from __future__ import annotations

import argparse
import atexit
import gc
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, NoReturn

from controller import __version__, errors
from controller.cli import control
from controller.cli.preload import Preload
from controller.config import Config, cached_config, load_config
from controller.model import Desired, Kind, Ref, parse_kind

if TYPE_CHECKING:
    from controller.adapter import Connecting
    from controller.reconcile import Session

EXIT_OK, EXIT_ERROR, EXIT_CHANGES = 0, 1, 2


class _Formatter(argparse.HelpFormatter):
    """argparse's help layout at the terminal's width, found as shutil.get_terminal_size
    finds it but without importing shutil (with bz2 and lzma: 2 ms of every command,
    which builds its parsers even when it prints no help)."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=_columns() - 2)


def _columns() -> int:
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns   # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns if columns > 0 else 80


class _Parser(argparse.ArgumentParser):
    """Usage errors exit 1: exit 2 means "plan has changes" in this command's contract."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(**kwargs)

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message}\n")


def _parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The command line's parser. Given the arguments, only the named command gets its
    subparser: argparse builds each one whole (8 ms for all of them here, against
    under 1 ms for one), and every command paid for the others. Help and unknown
    commands get them all."""
    command = _command_word(sys.argv[1:] if argv is None else argv)
    adding = (lambda name: name == command) if command in _COMMANDS else (lambda name: True)
    parser = _Parser(prog="iaasctl", description="Declarative controller for KVM/QEMU hosts.")
    parser.add_argument("--version", action="version", version=f"iaasctl {__version__}")
    parser.add_argument("--connect", "-c", metavar="URI", help="libvirt URI (default qemu:///system)")
    parser.add_argument("--state-dir", metavar="DIR", help="state directory (default /var/lib/iaasctl)")
    parser.add_argument("--config", metavar="FILE", help="controller configuration file")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    if adding("validate"):
        p = sub.add_parser("validate", help="check manifests without touching libvirt")
        p.add_argument("paths", nargs="+", metavar="PATH")

    for name, text in (("plan", "show what apply would do"), ("apply", "make the host match the manifests")):
        if not adding(name):
            continue
        p = sub.add_parser(name, help=text)
        p.add_argument("-f", "--filename", dest="paths", action="append", required=True, metavar="PATH",
                       help="manifest file or directory (repeatable)")
        p.add_argument("--adopt", action="store_true", help="take over same-named objects iaasctl does not own")
        p.add_argument("--allow-mass-delete", action="store_true",
                       help="allow deleting more than half of the managed objects in one run")
        p.add_argument("--no-prune", dest="prune", action="store_false",
                       help="do not delete owned objects whose manifests are gone")
        if name == "plan":
            p.add_argument("-o", "--output", choices=("text", "json"), default="text")
        else:
            p.add_argument("--dry-run", action="store_true", help="show the plan and stop (same as plan)")
            p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
            _parallelism_flag(p)

    if adding("delete"):
        p = sub.add_parser("delete", help="delete the objects the manifests declare (owned ones only)")
        p.add_argument("-f", "--filename", dest="paths", action="append", required=True, metavar="PATH")
        p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
        _parallelism_flag(p)

    if adding("get"):
        p = sub.add_parser("get", help="desired and live status of objects of one kind")
        p.add_argument("kind")
        p.add_argument("name", nargs="?")
        p.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table")

    if adding("describe"):
        p = sub.add_parser("describe", help="everything known about one object")
        p.add_argument("kind")
        p.add_argument("name")
        p.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml")

    control.add_parsers(sub, adding)
    return parser


_VALUED_OPTIONS = ("--connect", "-c", "--state-dir", "--config")


def _command_word(argv: Sequence[str]) -> str | None:
    """The first argument that is neither an option nor an option's value, as argparse
    finds the command; None before it asks for help (which lists every command). An
    abbreviated option (--conn) can make this miss: then all parsers are built."""
    tokens = iter(argv)
    for token in tokens:
        if token in ("-h", "--help"):
            return None
        if token in _VALUED_OPTIONS:
            next(tokens, None)
        elif not token.startswith("-"):
            return token
    return None


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parser(argv).parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors: argparse has printed them
        return int(exc.code or 0)
    try:
        return _COMMANDS[args.command](args)
    except errors.ManifestInvalid as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        noun = "problem" if len(exc.problems) == 1 else "problems"
        print(f"{len(exc.problems)} {noun} found; nothing was changed.", file=sys.stderr)
        return EXIT_ERROR
    except errors.IaasError as exc:
        print(f"iaasctl: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:  # the state directory or a file of ours, not libvirt
        where = f" {exc.filename}" if exc.filename else ""
        print(f"iaasctl: error:{where}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("iaasctl: interrupted", file=sys.stderr)
        return 130


def run(argv: Sequence[str] | None = None) -> NoReturn:
    """The `iaasctl` command: `main`, then the process ends without Python's shutdown,
    which tears down every module and object one at a time: ~16 ms of a command after
    its work was done, where the kernel frees the lot at once. Exit handlers still run
    and the output is flushed first; a thread still at work gets the usual shutdown,
    which waits for it.

    Python's cycle collector is off for the command (the daemon, `run`, turns it back
    on): a command's imports and records set it off 10-20 times, 2-5 ms of the
    command (docs/performance.md, sixteenth round), to find cycles in a process that
    ends a second later and frees everything at once. Reference counting still frees
    everything that is not in a cycle."""
    gc.disable()
    code = main(argv)
    threading = sys.modules.get("threading")   # not imported: no other thread
    if threading is not None and any(not t.daemon and t is not threading.main_thread()
                                     for t in threading.enumerate()):
        sys.exit(code)
    atexit._run_exitfuncs()  # noqa: SLF001 - what the shutdown would run first; no public spelling
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass   # a reader that went away (| head): what was left to say has nowhere to go
    os._exit(code)


def _parallelism_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--parallelism", type=_at_least_one, metavar="N",
                        help="independent changes run at once (default: the configuration's, 32)")


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _config(args: argparse.Namespace) -> Config:
    return _with_flags(load_config(args.config, connect=args.connect, state_dir=args.state_dir), args)


def _with_flags(config: Config, args: argparse.Namespace) -> Config:
    if getattr(args, "parallelism", None):
        config = replace(config, parallelism=args.parallelism)
    return config


def _load(paths: Sequence[str], *, partial: bool = False, config: Config | None = None) -> Desired:
    """The manifests; with a config, through the cache in its state directory."""
    if config is None:
        from controller.manifest import load

        return load(list(paths), partial=partial)
    from controller.manifest.cache import load_cached

    return load_cached(list(paths), cache_dir=os.path.join(config.state_dir, "cache"), partial=partial)


def _start(args: argparse.Namespace, *, partial: bool = False) -> tuple[Config, Desired, Connecting]:
    """The configuration and the manifests of a plan, apply or delete, and the
    connection to the host, begun. The YAML half (configuration file, manifests) is
    read in a child process while this one imports libvirt and the pipeline (see
    cli/preload.py); the connection is begun as soon as both libvirt and the
    configuration are there, before the rest of the imports if the child was quicker.
    The loads the child could not keep in the cache (no state directory yet) come
    back with them, for _session to keep."""
    warm = _cached(args, partial=partial)
    if warm is not None:   # nothing to parse: no child, whose fork would cost more than it saves
        config, desired = warm
        connecting = _connect(config)
        _import_pipeline()
        return config, desired, connecting

    def prepare() -> tuple[Config, Desired, dict[Any, Any]]:
        config = _config(args)
        desired = _load(args.paths, partial=partial, config=config)
        from controller.manifest.cache import unsaved

        return config, desired, unsaved()

    preload = Preload(prepare)
    from controller.adapter import Connecting  # noqa: F401 - libvirt, imported beside the child's work

    if preload.ready():
        config, desired, loads = preload.result()
        connecting = _connect(config)
        _import_pipeline()
    else:
        _import_pipeline()
        config, desired, loads = preload.result()
        connecting = _connect(config)
    from controller.manifest.cache import keep_unsaved

    keep_unsaved(loads)
    return config, desired, connecting


def _cached(args: argparse.Namespace, *, partial: bool) -> tuple[Config, Desired] | None:
    """The configuration and manifests as they were last read (the caches in the state
    directory), if neither changed since; None if YAML has to be read."""
    config = cached_config(args.config, connect=args.connect, state_dir=args.state_dir)
    if config is None:
        return None
    config = _with_flags(config, args)
    from controller.manifest.cache import cached

    desired = cached(list(args.paths), cache_dir=os.path.join(config.state_dir, "cache"), partial=partial)
    return None if desired is None else (config, desired)


def _import_pipeline() -> None:
    """What plan, apply and delete import besides the adapter."""
    import controller.cli.output
    import controller.reconcile
    import controller.state  # noqa: F401


def _connect(config: Config, *, spares: int = 2) -> Connecting:
    """The connection to the host, begun early: libvirt connects while the command
    imports the rest of the pipeline, and opens `spares` more (see Connecting): the
    first observation reads on all three (Libvirt.inventory), and the first two
    workers of an apply or delete start on two of them. libvirt's event loop runs for
    the keepalive of the session (see _session)."""
    from controller.adapter import Connecting
    from controller.adapter.events import start_event_loop

    start_event_loop()
    return Connecting(config.connect, config.connect_timeout, spares=spares)


def _session(config: Config, connecting: Connecting) -> Session:
    """The host and the state store for a command that loaded manifests first: the
    load is kept in the cache now if the state directory did not exist before (a
    first `plan` or `apply` loads before the session creates it). With keepalive, as
    the daemon has: a libvirtd that hangs in the middle of a command fails its call
    within ~20 s instead of holding the command for as long as it hangs."""
    from controller.adapter.events import KEEPALIVE
    from controller.manifest.cache import save_unsaved
    from controller.reconcile import Session

    session = Session.open(config, connecting, keepalive=KEEPALIVE)
    save_unsaved()
    return session


def cmd_validate(args: argparse.Namespace) -> int:
    from controller.reconcile import paths_outside

    desired = _load(args.paths)
    problems = paths_outside(desired, _config(args).state_dir)
    if problems:
        raise errors.ManifestInvalid(problems)
    print(f"{len(desired.specs)} {_plural(len(desired.specs), 'document')} valid.")
    return EXIT_OK


def _plural(count: int, noun: str) -> str:
    return noun if count == 1 else noun + "s"


def cmd_plan(args: argparse.Namespace) -> int:
    config, desired, connecting = _start(args)
    from controller.cli import output
    from controller.plan import Policy

    policy = Policy(adopt=args.adopt, allow_mass_delete=args.allow_mass_delete, prune=args.prune)
    with _session(config, connecting) as session:
        the_plan, _ = session.plan(desired, policy=policy)
    if getattr(args, "output", "text") == "json":
        output.dump(output.plan_document(the_plan), "json")
    else:
        output.print_plan(the_plan)
    if the_plan.refusals:
        return EXIT_ERROR
    return EXIT_OK if the_plan.empty else EXIT_CHANGES


def cmd_apply(args: argparse.Namespace) -> int:
    if args.dry_run:
        return cmd_plan(args)
    config, desired, connecting = _start(args)
    from controller.cli import output
    from controller.plan import Disruption, Policy
    from controller.reconcile import apply
    from controller.state import exclusive

    policy = Policy(adopt=args.adopt, allow_mass_delete=args.allow_mass_delete, prune=args.prune)
    with connecting, exclusive(config.state_dir), _session(config, connecting) as session:
        for line in session.recover():
            print(line, file=sys.stderr)
        everything, suspended = session.store.suspended()
        if everything:
            raise errors.ConfigError("reconciliation is suspended (iaasctl resume); nothing was changed")
        full, observed = session.plan(desired, policy=policy)
        preview, _ = full.without(suspended)
        for ref in sorted(suspended, key=lambda r: r.sort_key):
            print(f"suspended: {ref} is left as it is (iaasctl resume {ref.kind.value} {ref.name})",
                  file=sys.stderr)
        output.print_plan(preview)
        if preview.empty and not preview.refusals:
            session.sync_records(desired, observed, unsettled=suspended)
            return EXIT_OK
        destructive = any(c.disruption in (Disruption.DESTRUCTIVE, Disruption.RESTART) for c in preview.changes)
        ask = destructive and not args.yes and sys.stdin.isatty()
        if ask and not _confirm():
            print("Cancelled; nothing was changed.", file=sys.stderr)
            return EXIT_ERROR
        # After a question the host is observed again (the answer may take minutes);
        # otherwise the plan just printed is the one executed.
        result = apply(session, desired, policy=policy, progress=output.print_progress, shown=preview,
                       held=suspended, planned=None if ask else (full, observed))
    for refusal in result.plan.refusals:
        print(f"refused: {refusal.ref}: {refusal.message}", file=sys.stderr)
    if result.converged:
        count = len(result.outcomes)
        print(f"Applied {count} {_plural(count, 'change')}; the host matches the manifests.")
        return EXIT_OK
    print(f"Not converged: {len(result.failed)} failed, {len(result.remaining.changes)} changes remain, "
          f"{len(result.remaining.refusals)} refused.", file=sys.stderr)
    for change in result.remaining.changes:
        print(f"  remaining: {change.action.value} {change.ref}: {change.reason}", file=sys.stderr)
    return EXIT_ERROR


def cmd_delete(args: argparse.Namespace) -> int:
    """Tear down what the manifests declare: the same machinery as pruning, aimed at
    exactly these objects, in reverse dependency order. Unowned objects are untouched."""
    config, declared, connecting = _start(args, partial=True)   # one file of a stack may name objects of others
    from controller.cli import output
    from controller.model import ref_of
    from controller.plan import Policy
    from controller.reconcile import apply
    from controller.state import exclusive

    nothing = Desired(specs=(), roots=(os.sep,))
    policy = Policy(allow_mass_delete=True, only=frozenset(ref_of(s) for s in declared.specs))
    with connecting, exclusive(config.state_dir), _session(config, connecting) as session:
        for line in session.recover():
            print(line, file=sys.stderr)
        preview, observed = session.plan(nothing, policy=policy)
        owned = session.store.owned()
        for ref in sorted(policy.only or (), key=lambda r: r.sort_key):
            live = observed.objects.get(ref)
            if live is not None and ref not in owned and live.owner is None:
                print(f"skipped {ref}: not managed by iaasctl", file=sys.stderr)
        if preview.empty and not preview.refusals:
            print("Nothing to delete: none of the declared objects is on the host and managed by iaasctl.")
            return EXIT_OK
        output.print_plan(preview)
        if preview.empty:   # only refusals, printed with the plan
            return EXIT_ERROR
        ask = not args.yes and sys.stdin.isatty()
        if ask and not _confirm("Delete these objects?"):
            print("Cancelled; nothing was changed.", file=sys.stderr)
            return EXIT_ERROR
        result = apply(session, nothing, policy=policy, progress=output.print_progress, command="delete",
                       shown=preview, planned=None if ask else (preview, observed))
    if result.converged:
        print(f"Deleted {len(result.outcomes)} {_plural(len(result.outcomes), 'object')}.")
        return EXIT_OK
    for outcome in result.failed:
        print(f"failed: {outcome.change.ref}: {outcome.error}", file=sys.stderr)
    return EXIT_ERROR   # refusals were printed with the plan


def _confirm(question: str = "Some changes restart or destroy objects. Apply?") -> bool:
    answer = input(f"{question} [y/N] ")
    return answer.strip().lower() in ("y", "yes")


def cmd_get(args: argparse.Namespace) -> int:
    kind = _kind(args.kind)
    config = _config(args)
    connecting = _connect(config)
    from controller import status
    from controller.cli import output
    from controller.observe import observe

    with _session(config, connecting) as session:
        rows = status.rows(kind, observe(session.client), session.store, status.addresses_from(session.client),
                           name=args.name)
    if args.output == "table":
        output.print_table(rows, status.COLUMNS[kind])
    else:
        output.dump(rows, args.output)
    return EXIT_OK


def cmd_describe(args: argparse.Namespace) -> int:
    kind = _kind(args.kind)
    config = _config(args)
    connecting = _connect(config)
    from controller import status
    from controller.cli import output
    from controller.observe import observe

    with _session(config, connecting) as session:
        doc = status.describe(Ref(kind, args.name), observe(session.client), session.store,
                              status.addresses_from(session.client))
    if doc is None:
        print(f"iaasctl: {kind.value}/{args.name} not found", file=sys.stderr)
        return EXIT_ERROR
    output.dump(doc, args.output)
    return EXIT_OK


def _kind(text: str) -> Kind:
    return parse_kind(text)


def cmd_run(args: argparse.Namespace) -> int:
    return control.cmd_run(args, _config(args))


def cmd_status(args: argparse.Namespace) -> int:
    return control.cmd_status(args, _config(args))


def cmd_serve(args: argparse.Namespace) -> int:
    return control.cmd_serve(args, _config(args))


def cmd_events(args: argparse.Namespace) -> int:
    return control.cmd_events(args, _config(args))


def cmd_control(args: argparse.Namespace) -> int:
    return control.cmd_control(args, _config(args))


_COMMANDS = {
    "validate": cmd_validate,
    "plan": cmd_plan,
    "apply": cmd_apply,
    "delete": cmd_delete,
    "get": cmd_get,
    "describe": cmd_describe,
    "run": cmd_run,
    "status": cmd_status,
    "serve": cmd_serve,
    "events": cmd_events,
    "reconcile": cmd_control,
    "suspend": cmd_control,
    "resume": cmd_control,
}
