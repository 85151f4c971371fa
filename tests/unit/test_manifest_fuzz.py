"""Whatever the bytes, `load` either returns specs or raises ManifestInvalid: no other
exception escapes (RELIABILITY S10, for the loader)."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from controller.errors import ManifestInvalid
from controller.manifest import load
from controller.model import Desired

GOOD = Path(__file__).parent / "manifests" / "good"
SAMPLES = [p.read_bytes() for p in sorted(GOOD.rglob("*.y*ml"))]
YAMLISH = st.text(alphabet=st.sampled_from(list("abcdeNOyes0123456789:.-/ \n\t[]{},&*!|>'\"#?%@`~\\")) | st.characters(),
                  max_size=400)


def load_bytes(data: bytes) -> Desired | ManifestInvalid:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.yaml"
        path.write_bytes(data)
        try:
            return load([str(path)])
        except ManifestInvalid as exc:
            assert exc.problems, "ManifestInvalid without problems"
            assert all(p.file == str(path) and p.line >= 0 and p.path and p.message for p in exc.problems)
            return exc


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=YAMLISH)
@example(text="a: !!python/object/apply:os.system [x]")
@example(text="&a [*a]")
@example(text="? [a]\n: b")
@example(text="- !!int 0x\n")
@example(text="apiVersion: iaas/v1\nkind: Volume\nmetadata: {name: v}\nspec: {pool: p, size: 99999999999999999999999TiB}")
def test_arbitrary_text(text: str) -> None:
    load_bytes(text.encode("utf-8", "surrogatepass"))


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=300))
def test_arbitrary_bytes(data: bytes) -> None:
    load_bytes(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sample=st.sampled_from(SAMPLES), edits=st.lists(st.tuples(st.integers(0, 10_000), st.binary(max_size=4)),
                                                       min_size=1, max_size=4))
def test_mutated_valid_manifests(sample: bytes, edits: list[tuple[int, bytes]]) -> None:
    data = bytearray(sample)
    for position, replacement in edits:
        at = position % (len(data) + 1)
        data[at:at + len(replacement)] = replacement
    load_bytes(bytes(data))


DOCUMENTS = [doc for p in sorted(GOOD.rglob("*.y*ml")) for doc in yaml.safe_load_all(p.read_text()) if doc]
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=20)
    | st.sampled_from(["10.10.0.1", "10.10.0.0/24", "52:54:00:00:00:01", "lab", "images", "web-1-root",
                       "/srv/x", "1GiB", "0", "bridge", "nat", "qcow2", "raw", "debian-base"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


def paths_of(value: object, prefix: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += paths_of(child, prefix + (key,))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += paths_of(child, prefix + (index,))
    return found


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_valid_manifests_with_one_value_replaced(data: st.DataObject) -> None:
    """The whole good set, with any one value (or a new key) swapped for anything:
    exercises the schema error mapping, the builders and the cross-checks."""
    documents = copy.deepcopy(DOCUMENTS)
    index = data.draw(st.integers(0, len(documents) - 1))
    path = data.draw(st.sampled_from(paths_of(documents[index])[1:]))
    parent = documents[index]
    for part in path[:-1]:
        parent = parent[part]
    key = data.draw(st.sampled_from([path[-1], "extra"])) if isinstance(parent, dict) else path[-1]
    parent[key] = data.draw(VALUES)
    load_bytes(yaml.safe_dump_all(documents).encode())
