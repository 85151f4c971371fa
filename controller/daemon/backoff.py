"""Per-resource retry decisions, as a workqueue's rate limiter makes them.

A transient failure (libvirt busy or timing out, the connection lost, an object
gone in a race with another client) is retried after
base * 2^(n-1) seconds, capped; a permanent one (the host refuses the definition)
is not retried until the manifest changes, i.e. until the resource's generation
(spec hash) differs from the one that failed. Success forgets the history. Time
is a monotonic clock passed in, so wall-clock jumps cannot stall or rush retries.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from controller.model import Ref


@dataclass(frozen=True)
class Retry:
    """One resource's failures so far, and when it may be attempted again."""

    failures: int
    next_at: float | None        # monotonic; None when permanent
    generation: str | None       # the spec hash that failed
    error: str


class Backoff:
    def __init__(self, *, base: float = 1.0, cap: float = 300.0) -> None:
        self.base = base
        self.cap = cap
        self._retries: dict[Ref, Retry] = {}

    def failed(self, ref: Ref, *, transient: bool, error: str, generation: str | None, now: float) -> Retry:
        failures = self._retries[ref].failures + 1 if ref in self._retries else 1
        delay = min(self.base * 2 ** (failures - 1), self.cap)
        retry = Retry(failures, now + delay if transient else None, generation, error)
        self._retries[ref] = retry
        return retry

    def succeeded(self, ref: Ref) -> None:
        self._retries.pop(ref, None)

    def forget(self, ref: Ref) -> None:
        """An explicit request (`iaasctl reconcile`) retries at once."""
        self._retries.pop(ref, None)

    def held(self, now: float, generations: Mapping[Ref, str]) -> frozenset[Ref]:
        """Resources not to be attempted in this pass. A permanent failure whose manifest
        changed is released (and forgotten)."""
        held = set()
        for ref, retry in list(self._retries.items()):
            if retry.next_at is None:
                if generations.get(ref) != retry.generation:
                    del self._retries[ref]
                else:
                    held.add(ref)
            elif retry.next_at > now:
                held.add(ref)
        return frozenset(held)

    def next_due(self) -> float | None:
        times = [r.next_at for r in self._retries.values() if r.next_at is not None]
        return min(times) if times else None

    def get(self, ref: Ref) -> Retry | None:
        return self._retries.get(ref)

    def items(self) -> list[tuple[Ref, Retry]]:
        return list(self._retries.items())
