"""The part of bench/trace.py that runs inside the traced process: it is imported
first there, and imports nothing the traced program might not (no `typing`, no
`importlib.abc`, whose imports pull in pathlib, tempfile and re: loaded before the
clock starts, they would take their import time off the program's timeline)."""

from __future__ import annotations

import time

START_NS = time.perf_counter_ns()   # the timeline's zero: the process's first statement, near enough

import atexit  # noqa: E402 - after the clock starts
import importlib.machinery  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


# With phases: our functions between libvirt calls, wrapped as their modules are
# imported, recorded as "@module.function" (see bench/trace.py, `--phases`).
PHASES = {
    "controller.cli": ("_start", "_session"),
    "controller.reconcile": ("Session.plan", "apply"),
    "controller.observe": ("observe",),
    "controller.plan": ("plan",),
    "controller.execute": ("execute",),
    "controller.state.core": ("StoreCore._commit",),     # a shared commit: an fsync
}


def install(out: str, *, phases: bool = False) -> None:
    """Trace this process's libvirt calls into `out` (appended, one block per process):
    libvirt's classes are wrapped as libvirt is imported, and the calls written at exit.
    `phases`: also the functions of PHASES, and the end of their modules' imports
    (as "@import module")."""
    calls: list[tuple[int, int, str, str]] = []
    wanted = {"libvirt", *PHASES} if phases else {"libvirt"}

    def wrap(function: Callable[..., Any], label: str) -> Callable[..., Any]:
        def traced(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter_ns()
            try:
                return function(*args, **kwargs)
            finally:
                calls.append((began, time.perf_counter_ns() - began, threading.current_thread().name, label))
        return traced

    def patch(module: Any) -> None:
        for cls in (module.virConnect, module.virDomain, module.virNetwork, module.virStoragePool,
                    module.virStorageVol):
            for name, function in list(vars(cls).items()):
                if callable(function) and not name.startswith("_"):
                    setattr(cls, name, wrap(function, f"{cls.__name__}.{name}"))
        for name in ("open", "openAuth", "openReadOnly"):
            if hasattr(module, name):
                setattr(module, name, wrap(getattr(module, name), name))

    def patch_ours(module: Any, name: str) -> None:
        for dotted in PHASES[name]:
            owner, _, attr = dotted.rpartition(".")
            holder = getattr(module, owner) if owner else module
            setattr(holder, attr, wrap(getattr(holder, attr), f"@{name}.{dotted}"))

    class Finder:   # a meta path finder needs only find_spec
        def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
            if name not in wanted:
                return None
            wanted.discard(name)
            if not wanted:
                sys.meta_path.remove(self)  # type: ignore[arg-type]
            spec = importlib.machinery.PathFinder.find_spec(name, path)
            if spec is None or spec.loader is None:
                return spec
            load = spec.loader.exec_module

            def exec_module(module: Any) -> None:
                load(module)
                if name == "libvirt":
                    patch(module)
                else:
                    now = time.perf_counter_ns()
                    calls.append((now, 0, threading.current_thread().name, f"@import {name}"))
                    patch_ours(module, name)
            spec.loader.exec_module = exec_module  # type: ignore[method-assign]
            return spec

    def write() -> None:
        end = time.perf_counter_ns()
        with open(out, "a", encoding="utf-8") as file:
            for began, length, thread, label in sorted(calls):
                file.write(f"{(began - START_NS) / 1e6:.1f}\t{length / 1e6:.1f}\t{thread}\t{label}\n")
            file.write(f"END\t{(end - START_NS) / 1e6:.1f}\n")

    sys.meta_path.insert(0, Finder())  # type: ignore[arg-type]
    atexit.register(write)
