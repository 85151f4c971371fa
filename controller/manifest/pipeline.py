"""The loading pipeline itself (see the package docstring for its stages)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from controller.errors import ManifestInvalid, Problem
from controller.manifest import build, crosscheck, envelope, files, schema, yaml11, yamlsafe
from controller.manifest.located import Document
from controller.model import Desired, Ref, Spec

def load(paths: Sequence[str], *, partial: bool = False) -> Desired:
    """Load every *.yaml/*.yml under each path (files or directory trees, sorted, dotfiles
    and editor temp files like *~, *.swp, .#* skipped), validate, cross-check, and return
    typed specs. Raises ManifestInvalid carrying EVERY problem found in the run (all files),
    never touching libvirt.

    `partial=True` says the paths are only some of the manifests (`delete -f web.yaml`):
    a reference to a document outside them is then not an error; every other check runs.
    """
    if isinstance(paths, str):
        raise TypeError("load() takes a sequence of paths, not one string")
    manifest_files, problems = files.read_all(paths)
    return load_files(manifest_files, problems, partial=partial, roots=paths)


def load_files(manifest_files: Sequence[files.ManifestFile], unreadable: Sequence[Problem] = (), *,
               partial: bool = False, roots: Sequence[str] = ()) -> Desired:
    """`load` of texts already read: the files as they would be (the REST API checks
    a manifest it was sent beside the ones on disk before it writes it), with the
    problems found reading them (`unreadable`)."""
    problems = list(unreadable)
    declared: list[crosscheck.Declared] = []
    specs: list[Spec] = []
    for manifest in manifest_files:
        documents, found = yamlsafe.read_documents(manifest.text, manifest.name)
        problems += found
        for doc in documents:
            spec, found = _document(doc, declared)
            problems += found
            if spec is not None:
                specs.append(spec)
    problems += crosscheck.check(declared, specs, references=not partial)
    if problems:
        raise ManifestInvalid(problems)
    return Desired(specs=tuple(specs), roots=tuple(str(Path(p).resolve()) for p in roots))


def _document(doc: Document, declared: list[crosscheck.Declared]) -> tuple[Spec | None, list[Problem]]:
    """One document through envelope, schema, spelling and build; records its name in `declared`."""
    kind, problems = envelope.kind_of(doc)
    if kind is None:
        return None, problems
    name = envelope.declared_name(doc)
    if name is not None:
        declared.append(crosscheck.Declared(Ref(kind, name), doc.file, doc.line_of(("metadata", "name"))))
    problems, flagged = schema.validate(doc, kind)
    problems += yaml11.spelling_problems(doc, flagged)
    if problems:
        return None, problems
    return build.build(doc, kind)
