"""RELIABILITY B2: the codebase never constructs YAML with an unsafe loader.

Two checks over every Python file of the repository: a grep (any line calling
`yaml.load(` / `yaml.load_all(` must name a SafeLoader), and an AST walk that also
catches keyword spellings, `yaml.unsafe_load`/`full_load` and the unsafe loader
classes wherever they are mentioned. Both are tested against bad snippets first,
so that an empty result means something.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SKIP_DIRS = {".git", ".venv", "venv", "build", "dist", "node_modules", "__pycache__", ".mypy_cache", ".tox"}
SAFE_LOADERS = {"SafeLoader", "CSafeLoader", "BaseLoader", "CBaseLoader"}
UNSAFE_NAMES = {"Loader", "FullLoader", "UnsafeLoader", "CLoader", "CFullLoader", "CUnsafeLoader",
                "unsafe_load", "unsafe_load_all", "full_load", "full_load_all"}
GREP = re.compile(r"\byaml\.load(_all)?\(")


def python_files() -> Iterator[Path]:
    for path in sorted(REPO.rglob("*.py")):
        if not SKIP_DIRS.intersection(path.relative_to(REPO).parts):
            yield path


def grep_findings(source: str) -> list[str]:
    return [line.strip() for line in source.splitlines()
            if GREP.search(line) and not any(loader in line for loader in SAFE_LOADERS)]


def ast_findings(source: str) -> list[str]:
    findings = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and _is_yaml(node.value) and node.attr in UNSAFE_NAMES:
            findings.append(f"line {node.lineno}: yaml.{node.attr}")
        elif isinstance(node, ast.ImportFrom) and node.module == "yaml":
            findings += [f"line {node.lineno}: from yaml import {a.name}" for a in node.names
                         if a.name in UNSAFE_NAMES | {"load", "load_all"}]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and _is_yaml(node.func.value) \
                and node.func.attr in ("load", "load_all") and not _safe_loader_given(node):
            findings.append(f"line {node.lineno}: yaml.{node.func.attr} without a safe Loader")
    return findings


def _is_yaml(node: ast.expr) -> bool:
    return isinstance(node, ast.Name) and node.id == "yaml"


def _safe_loader_given(call: ast.Call) -> bool:
    loader = call.args[1] if len(call.args) > 1 else next((k.value for k in call.keywords if k.arg == "Loader"), None)
    name = loader.attr if isinstance(loader, ast.Attribute) else loader.id if isinstance(loader, ast.Name) else ""
    return name in SAFE_LOADERS


BAD_SNIPPETS = [
    "import yaml\nyaml.load(open('x'))\n",
    "import yaml\nyaml.load(text, Loader=yaml.Loader)\n",
    "import yaml\nyaml.load_all(text, yaml.FullLoader)\n",
    "import yaml\nyaml.unsafe_load(text)\n",
    "import yaml\nyaml.full_load(text)\n",
    "from yaml import load\n",
    "from yaml import UnsafeLoader\n",
]


@pytest.mark.parametrize("snippet", BAD_SNIPPETS)
def test_the_checks_catch_unsafe_loading(snippet: str) -> None:
    assert ast_findings(snippet)


def test_the_grep_catches_a_bare_call() -> None:
    assert grep_findings("data = yaml.load(stream)\n") == ["data = yaml.load(stream)"]
    assert grep_findings("data = yaml.load(stream, Loader=yaml.CSafeLoader)\n") == []


@pytest.mark.parametrize("snippet", [
    "import yaml\nyaml.safe_load(text)\n",
    "import yaml\nyaml.load(text, Loader=yaml.CSafeLoader)\n",
    "import yaml\nyaml.load_all(text, yaml.SafeLoader)\n",
    "import yaml\nyaml.parse(text, Loader=yaml.CSafeLoader)\n",
])
def test_the_checks_accept_safe_loading(snippet: str) -> None:
    assert ast_findings(snippet) == [] and grep_findings(snippet) == []


def test_no_unsafe_yaml_loading_in_the_codebase() -> None:
    this_file = Path(__file__).resolve()
    findings = []
    for path in python_files():
        if path.resolve() == this_file:         # the bad snippets above are data
            continue
        source = path.read_text(encoding="utf-8")
        findings += [f"{path.relative_to(REPO)}: {f}" for f in grep_findings(source) + ast_findings(source)]
    assert findings == []
    assert any(path.match("controller/manifest/yamlsafe.py") for path in python_files())
