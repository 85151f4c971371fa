"""The daemon's view of the manifests: tolerant of a broken file, patient with a
vanished one.

`apply` refuses to run when any manifest is invalid. A daemon cannot stop
reconciling everything because one file is half-saved, so it loads the files that
are valid and *holds* the objects of the broken ones exactly as they are (neither
changed nor deleted) until the file is fixed. An object whose manifest disappeared
is deleted only after it stayed absent for the grace period: a vim save (rename
away, write, rename back) or a `git checkout` must never destroy a VM.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from controller.errors import ManifestInvalid, Problem
from controller.manifest import load
from controller.manifest.cache import load_cached
from controller.manifest.files import read_all
from controller.model import Desired, OwnedRecord, Ref, Spec, dependencies, ref_of
from controller.reconcile import paths_outside


@dataclass(frozen=True)
class Loaded:
    """The manifests as the daemon loaded them: the valid specs, the objects held as they are and why."""

    desired: Desired
    held: frozenset[Ref]                      # objects of broken files, and what depends on missing ones
    problems: tuple[Problem, ...] = ()


def load_tolerant(paths: Sequence[str], owned: dict[Ref, OwnedRecord], *, state_dir: str) -> Loaded:
    roots = tuple(os.path.realpath(p) for p in paths)
    try:
        cached = load_cached(list(paths), cache_dir=os.path.join(state_dir, "cache"))
        desired = cached if cached.roots == roots else Desired(cached.specs, roots)
        outside = paths_outside(desired, state_dir)
        if not outside:
            return Loaded(desired, frozenset())
        raise ManifestInvalid(outside)
    except ManifestInvalid as exc:
        problems = tuple(exc.problems)
    bad = {os.path.realpath(p.file) for p in problems}
    good_files = [f.name for f in read_all(paths)[0] if os.path.realpath(f.name) not in bad]
    specs: tuple[Spec, ...] = ()
    for _ in range(len(good_files) + 1):   # each round drops at least one more broken file
        if not good_files:
            break
        try:
            specs = load(good_files, partial=True).specs
            outside = paths_outside(Desired(specs, roots), state_dir)
            if outside:
                raise ManifestInvalid(outside)
            break
        except ManifestInvalid as again:
            more = {os.path.realpath(p.file) for p in again.problems}
            problems += tuple(again.problems)
            bad |= more
            good_files = [f for f in good_files if os.path.realpath(f) not in more]
    specs, orphans = _without_missing_dependencies(specs)
    held = {ref for ref, record in owned.items() if record.source in bad} | orphans
    return Loaded(Desired(specs, roots), frozenset(held), problems)


def _without_missing_dependencies(specs: tuple[Spec, ...]) -> tuple[tuple[Spec, ...], set[Ref]]:
    """Specs whose references point into a broken file cannot be planned: they are held."""
    kept = list(specs)
    dropped: set[Ref] = set()
    while True:
        known = {ref_of(s) for s in kept}
        missing = [s for s in kept if any(d not in known for d in dependencies(s))]
        if not missing:
            return tuple(kept), dropped
        dropped |= {ref_of(s) for s in missing}
        kept = [s for s in kept if ref_of(s) not in dropped]


@dataclass
class Grace:
    """How long each owned object has been missing from the manifests."""

    seconds: float
    clock: Callable[[], float]
    _absent_since: dict[Ref, float] = field(default_factory=dict)

    def held(self, desired: Desired, owned: dict[Ref, OwnedRecord]) -> frozenset[Ref]:
        """Owned objects absent from the manifests for less than the grace period."""
        now = self.clock()
        wanted = set(desired.by_ref())
        absent = {ref for ref in owned if ref not in wanted}
        for ref in list(self._absent_since):
            if ref not in absent:
                del self._absent_since[ref]
        for ref in absent:
            self._absent_since.setdefault(ref, now)
        return frozenset(ref for ref, since in self._absent_since.items() if now - since < self.seconds)

    def next_due(self) -> float | None:
        """When the next held object's grace period ends (monotonic), to wake up for it."""
        ends = [since + self.seconds for since in self._absent_since.values() if since + self.seconds > self.clock()]
        return min(ends) if ends else None
