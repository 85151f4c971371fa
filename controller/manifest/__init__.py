"""Manifest loading: YAML files -> validated, typed desired state (`controller.model.Desired`).

The first step of the pipeline; nothing here touches libvirt. The stages, each a
module:

    files        which files, their text (size limit before parsing)
    yamlsafe     text -> located documents (`located`): no aliases, tags or duplicate
                 keys; depth and node limits
    envelope     apiVersion and kind, and the name a document declares
    schema       the kind's JSON Schema (`formats` checked for real), errors mapped to lines
    yaml11       the YAML 1.1 implicit-typing traps (`no`, `0755`, unquoted MACs)
    build        values -> specs, with the address-plan rules of `ipv4`
    crosscheck   rules across documents (references, cycles, duplicates, overlaps)

Every finding of every file is collected, and one ManifestInvalid carries them all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from controller.model import Desired

__all__ = ["load"]


def load(paths: Sequence[str], *, partial: bool = False) -> Desired:
    """Load, validate and cross-check every manifest under `paths` (see pipeline.load).

    The stages are imported here, not at package import, so that a command served
    from the manifest cache (controller.manifest.cache) never imports YAML or
    jsonschema at all."""
    from controller.manifest.pipeline import load as run

    return run(paths, partial=partial)
