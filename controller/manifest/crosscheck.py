"""Stage 4 of manifest loading: rules that span documents, checked on the whole run.

Pure: takes the declared names (from every document whose kind and name could be
read, valid or not, so that a broken volume does not also make its VM "dangle")
and the specs that were built, and returns findings. Each finding sits on the
later of two conflicting documents (in load order) and names the earlier one.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from controller.errors import Problem
from controller.model import Kind, NetworkSpec, PoolSpec, Ref, Spec, VMSpec, VolumeSpec


@dataclass(frozen=True)
class Declared:
    """A document's identity and where its name is written."""

    ref: Ref
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


def check(declared: Sequence[Declared], specs: Sequence[Spec], *, references: bool = True) -> list[Problem]:
    """Every cross-document finding of the run; `references=False` when the run holds only
    some of the manifests, so that a referenced document may lie outside it."""
    volumes = [s for s in specs if isinstance(s, VolumeSpec)]
    vms = [s for s in specs if isinstance(s, VMSpec)]
    networks = [s for s in specs if isinstance(s, NetworkSpec)]
    pools = [s for s in specs if isinstance(s, PoolSpec)]
    return [
        *_unique_names(declared),
        *(_references({d.ref for d in declared}, specs) if references else ()),
        *_source_cycles(volumes),
        *_attachments(vms),
        *_duplicates("MAC", ((vm, f"spec.networks[{i}].mac", n.mac) for vm in vms
                             for i, n in enumerate(vm.nics) if n.mac)),
        *_boot_orders(vms),
        *_duplicates("bridge", ((n, "spec.bridge", n.bridge) for n in networks if n.bridge)),
        *_duplicates("pool path", ((p, "spec.path", p.path) for p in pools)),
        *_overlapping_subnets(networks),
    ]


def _at(spec: Spec, path: str, message: str) -> Problem:
    return Problem(spec.meta.source.file, spec.meta.field_lines.get(path, spec.meta.source.line), path, message)


def _where(spec: Spec, path: str) -> str:
    """`VirtualMachine/web-1 at specs/web.yaml:12`"""
    line = spec.meta.field_lines.get(path, spec.meta.source.line)
    return f"{spec.kind.value}/{spec.meta.name} at {spec.meta.source.file}:{line}"


def _unique_names(declared: Iterable[Declared]) -> Iterator[Problem]:
    first: dict[Ref, Declared] = {}
    for item in declared:
        if item.ref in first:
            yield Problem(item.file, item.line, "metadata.name", f"duplicate {item.ref.kind.value} name "
                          f"'{item.ref.name}' (also defined at {first[item.ref]})")
        else:
            first[item.ref] = item


def _references(known: set[Ref], specs: Iterable[Spec]) -> Iterator[Problem]:
    for spec in specs:
        wanted: list[tuple[str, Ref]] = []
        if isinstance(spec, VolumeSpec):
            wanted.append(("spec.pool", Ref(Kind.POOL, spec.pool)))
            if spec.source_volume:
                wanted.append(("spec.source.volume", Ref(Kind.VOLUME, spec.source_volume)))
        elif isinstance(spec, VMSpec):
            wanted += [(f"spec.disks[{i}].volume", Ref(Kind.VOLUME, d.volume)) for i, d in enumerate(spec.disks)]
            wanted += [(f"spec.networks[{i}].network", Ref(Kind.NETWORK, n.network))
                       for i, n in enumerate(spec.nics)]
        for path, ref in wanted:
            if ref not in known:
                yield _at(spec, path, f"no {ref.kind.value} named '{ref.name}' is defined")


def _source_cycles(volumes: Sequence[VolumeSpec]) -> Iterator[Problem]:
    """Copy-on-write chains that lead back to where they started; each cycle reported once."""
    source = {v.meta.name: v.source_volume for v in volumes if v.source_volume}
    in_reported_cycle: set[str] = set()
    for volume in volumes:
        name = volume.meta.name
        chain = [name]
        while chain[-1] in source and len(chain) <= len(source):
            chain.append(source[chain[-1]])
            if chain[-1] == name:
                break
        if chain[-1] == name and len(chain) > 1 and name not in in_reported_cycle:
            in_reported_cycle.update(chain)
            yield _at(volume, "spec.source.volume", f"copy-on-write sources form a cycle: {' -> '.join(chain)}")


def _attachments(vms: Sequence[VMSpec]) -> Iterator[Problem]:
    """A volume is the disk of at most one VM, once."""
    attached: dict[str, tuple[VMSpec, str]] = {}
    for vm in vms:
        for index, disk in enumerate(vm.disks):
            path = f"spec.disks[{index}].volume"
            if disk.volume in attached:
                owner, owner_path = attached[disk.volume]
                yield _at(vm, path, f"Volume '{disk.volume}' is already attached to {_where(owner, owner_path)}")
            else:
                attached[disk.volume] = (vm, path)


def _boot_orders(vms: Sequence[VMSpec]) -> Iterator[Problem]:
    for vm in vms:
        seen: dict[int, int] = {}
        for index, disk in enumerate(vm.disks):
            if disk.boot_order is None:
                continue
            if disk.boot_order in seen:
                first = f"spec.disks[{seen[disk.boot_order]}]"
                line = vm.meta.field_lines.get(first + ".bootOrder", vm.meta.source.line)
                yield _at(vm, f"spec.disks[{index}].bootOrder",
                          f"boot order {disk.boot_order} is also used by {first} (line {line})")
            else:
                seen[disk.boot_order] = index


def _duplicates(what: str, items: Iterable[tuple[Spec, str, str]]) -> Iterator[Problem]:
    """Values that must be unique across the run (MACs are already lower case)."""
    first: dict[str, tuple[Spec, str]] = {}
    for spec, path, value in items:
        if value in first:
            yield _at(spec, path, f"{what} {value} is also used by {_where(*first[value])}")
        else:
            first[value] = (spec, path)


def _overlapping_subnets(networks: Sequence[NetworkSpec]) -> Iterator[Problem]:
    seen: list[tuple[ipaddress.IPv4Network, NetworkSpec]] = []
    for network in networks:
        if network.ipv4 is None:
            continue
        subnet = ipaddress.IPv4Network(network.ipv4.cidr)
        for other_subnet, other in seen:
            if subnet.overlaps(other_subnet):
                yield _at(network, "spec.ipv4.cidr", f"{subnet} overlaps {other_subnet} of "
                                                     f"{_where(other, 'spec.ipv4.cidr')}")
                break
        seen.append((subnet, network))
