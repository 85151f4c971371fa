"""The project's own exceptions; every layer raises these, never bare libvirt errors.

    IaasError
    ├── ManifestInvalid      bad input; carries every Problem of the run (file:line: path: message)
    ├── ConfigError          unusable controller configuration
    ├── LockHeld             another controller holds the state directory
    ├── PlanChanged          the host changed between the plan shown and the apply
    └── LibvirtFailure       a libvirt call failed; the adapter maps libvirt error codes here
        ├── NotFound          gone meanwhile (a race with another client): transient
        ├── AlreadyExists
        ├── OperationInvalid  e.g. "domain is not running": usually already in the wanted state
        ├── Disconnected      the connection is gone or hung: transient, reconnect and retry
        ├── InvalidForHost    the host refuses the definition: permanent until the manifest changes
        └── TransientFailure  busy or timed out: may succeed later

What the safety rules forbid (not owned, protected, shrink, replace without
opt-in, mass deletion) is not an exception: the planner reports it as a
Refusal in the plan, next to the changes that may still go ahead.

Each error says whether retrying can help (`transient`); callers decide on that
attribute, never on message text.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Problem:
    """One validation finding, located in a manifest file."""

    file: str
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.path}: {self.message}"


class IaasError(Exception):
    transient = False


class ManifestInvalid(IaasError):
    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    def __reduce__(self) -> tuple[type[ManifestInvalid], tuple[list[Problem]]]:
        return type(self), (self.problems,)   # pickled whole (cli/preload.py), not as its text


class ConfigError(IaasError):
    pass


class LockHeld(IaasError):
    pass


class PlanChanged(IaasError):
    pass


class LibvirtFailure(IaasError):
    """A libvirt call failed. Unless the code says the host refuses the definition
    (InvalidForHost), it is retried with backoff: QEMU failing to start after libvirtd
    came back ("process exited while connecting to monitor") is an internal error that
    passes, and a controller must not give up on a VM for it."""

    transient = True

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class NotFound(LibvirtFailure):
    """Gone between the look and the act (someone else's undefine): look again soon."""


class AlreadyExists(LibvirtFailure):
    pass


class OperationInvalid(LibvirtFailure):
    pass


class Disconnected(LibvirtFailure):
    pass


class InvalidForHost(LibvirtFailure):
    transient = False


class TransientFailure(LibvirtFailure):
    """A libvirt failure that says it may succeed later (busy, timeout)."""
