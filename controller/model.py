"""Typed desired state: what the manifests say, after loading and validation.

Sits between the manifest loader (which builds these) and the planner (which
compares them with observed state). Everything here is a frozen dataclass of
plain values: no I/O, no libvirt, safe to hash, compare and pass between threads.
Sizes are integers of bytes; names are already checked against the name rule.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
from collections.abc import Mapping

from controller import errors
from dataclasses import dataclass, field


class Kind(enum.Enum):
    """The four kinds, in creation order (deletes run in reverse)."""

    POOL = "StoragePool"
    VOLUME = "Volume"
    NETWORK = "Network"
    VM = "VirtualMachine"

    @property
    def rank(self) -> int:
        """Dependency layer: pools (0) before volumes and networks (1) before VMs (2)."""
        return {Kind.POOL: 0, Kind.VOLUME: 1, Kind.NETWORK: 1, Kind.VM: 2}[self]


@dataclass(frozen=True)
class Ref:
    """Identity of one resource: its kind and its name."""

    kind: Kind
    name: str

    @property
    def sort_key(self) -> tuple[int, str, str]:
        return (self.kind.rank, self.kind.value, self.name)

    def __str__(self) -> str:
        return f"{self.kind.value}/{self.name}"


@dataclass(frozen=True)
class Source:
    """Where a document came from, for error messages and prune scoping."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class Meta:
    """A document's metadata: its name, where it was written, its labels and its safety switches."""

    name: str
    source: Source
    labels: tuple[tuple[str, str], ...] = ()
    protect: bool = False          # refuse delete and replace
    allow_replace: bool = False    # opt in to destructive replacement (volume format, pool path...)
    # json path ("spec.size", "spec.disks[0].volume") -> line, so that later stages
    # (a refused shrink, a host check) can point at the line too. Not part of identity.
    field_lines: Mapping[str, int] = field(default_factory=dict, compare=False, hash=False, repr=False)

    def where(self, path: str) -> str:
        """`file:line: path` for messages about one field of this document."""
        line = self.field_lines.get(path, self.source.line)
        return f"{self.source.file}:{line}: {path}"


@dataclass(frozen=True)
class PoolSpec:
    """A directory storage pool: where its volumes are kept on the host."""

    meta: Meta
    path: str
    type: str = "dir"
    autostart: bool = True
    kind = Kind.POOL


@dataclass(frozen=True)
class VolumeSpec:
    """A disk image in a pool, `size` in bytes; optionally a copy-on-write clone
    of another managed volume or of a base image file."""

    meta: Meta
    pool: str
    size: int
    format: str = "qcow2"                  # qcow2 | raw
    source_volume: str | None = None       # CoW clone of another managed volume
    source_path: str | None = None         # CoW clone of a base image file
    kind = Kind.VOLUME


@dataclass(frozen=True)
class DhcpHost:
    """A static DHCP reservation of a network: the guest with this MAC gets this address."""

    mac: str                               # lower case, colon separated
    ip: str
    hostname: str | None = None


@dataclass(frozen=True)
class IPv4Spec:
    """A network's IPv4 address plan: subnet, gateway, DHCP range (None: no range) and reservations."""

    cidr: str                              # network address / prefix, e.g. 10.10.0.0/24
    gateway: str                           # host side address (first address unless given)
    dhcp_start: str | None = None
    dhcp_end: str | None = None
    hosts: tuple[DhcpHost, ...] = ()


@dataclass(frozen=True)
class NetworkSpec:
    """A libvirt virtual network, with its forwarding mode and optional IPv4 address plan."""

    meta: Meta
    mode: str                              # nat | isolated | routed | bridge
    bridge: str | None = None              # None: libvirt generates one
    domain: str | None = None
    autostart: bool = True
    ipv4: IPv4Spec | None = None
    kind = Kind.NETWORK


@dataclass(frozen=True)
class DiskSpec:
    """One disk of a VM: a managed volume by name. Read back from the host, a disk that is not
    a volume is spelled like `file:/its/path`, so that it shows up as a difference."""

    volume: str
    bus: str = "virtio"                    # virtio | sata | scsi
    boot_order: int | None = None


@dataclass(frozen=True)
class NicSpec:
    """One network interface of a VM: an entry of `spec.networks` in the manifest."""

    network: str
    mac: str | None = None                 # None: libvirt generates one, kept once assigned
    model: str = "virtio"


@dataclass(frozen=True)
class BootSpec:
    """Direct kernel boot: host paths of the kernel and initrd, and the kernel command line."""

    kernel: str
    initrd: str | None = None
    cmdline: str | None = None


@dataclass(frozen=True)
class VMSpec:
    """A virtual machine, `memory` in bytes. Also the shape in which observe reads a domain's
    persistent and running definitions back from the host."""

    meta: Meta
    vcpus: int
    memory: int
    power: str = "running"                 # running | stopped
    restart_policy: str = "manual"         # manual | auto
    autostart: bool = False
    firmware: str = "bios"                 # bios | uefi
    boot: BootSpec | None = None
    disks: tuple[DiskSpec, ...] = ()
    nics: tuple[NicSpec, ...] = ()
    kind = Kind.VM


Spec = PoolSpec | VolumeSpec | NetworkSpec | VMSpec


def ref_of(spec: Spec) -> Ref:
    return Ref(spec.kind, spec.meta.name)


def dependencies(spec: Spec) -> tuple[Ref, ...]:
    """The resources a spec refers to; they must exist before it is created."""
    if isinstance(spec, VolumeSpec):
        deps = [Ref(Kind.POOL, spec.pool)]
        if spec.source_volume:
            deps.append(Ref(Kind.VOLUME, spec.source_volume))
        return tuple(deps)
    if isinstance(spec, VMSpec):
        return tuple(Ref(Kind.VOLUME, d.volume) for d in spec.disks) + tuple(
            dict.fromkeys(Ref(Kind.NETWORK, n.network) for n in spec.nics)
        )
    return ()


@dataclass(frozen=True)
class Desired:
    """All specs of one run, keyed by reference, plus the roots they were loaded from."""

    specs: tuple[Spec, ...]
    roots: tuple[str, ...] = ()

    def by_ref(self) -> dict[Ref, Spec]:
        """The specs by reference (built once: every created VM looks up its volumes here)."""
        return self._index

    @functools.cached_property
    def _index(self) -> dict[Ref, Spec]:
        return {ref_of(s): s for s in self.specs}

    @functools.cached_property
    def hashes(self) -> dict[Ref, str]:
        """Each spec's generation (spec_hash), computed once; the manifest cache keeps them."""
        return {ref_of(s): spec_hash(s) for s in self.specs}


@dataclass(frozen=True)
class OwnedRecord:
    """What the state store remembers about an object the controller owns."""

    source: str                 # absolute path of the manifest file it was last applied from
    protect: bool = False
    spec_hash: str | None = None


def plain(value: object) -> object:
    """Specs (and their parts) as JSON-ready data, without `meta` (which holds where the
    document came from, not what it says)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value) if f.name != "meta"}
    if isinstance(value, (tuple, list)):
        return [plain(v) for v in value]
    return value


KIND_ALIASES = {
    Kind.VM: ("virtualmachine", "virtualmachines", "vm", "vms"),
    Kind.NETWORK: ("network", "networks", "net", "nets"),
    Kind.VOLUME: ("volume", "volumes", "vol", "vols"),
    Kind.POOL: ("storagepool", "storagepools", "pool", "pools"),
}


def parse_kind(text: str) -> Kind:
    lowered = text.lower()
    for kind, aliases in KIND_ALIASES.items():
        if lowered in aliases:
            return kind
    known = ", ".join(a for aliases in KIND_ALIASES.values() for a in aliases[1::2])
    raise errors.ConfigError(f"unknown kind {text!r} (use one of: {known})")


def spec_document(spec: Spec) -> dict[str, object]:
    """The spec as plain data for the state store (where it came from is kept apart)."""
    meta = spec.meta
    return {"name": meta.name, "labels": dict(meta.labels), "protect": meta.protect, "spec": plain(spec)}


def spec_hash(spec: Spec) -> str:
    """The generation of a spec: what it says, not where it was written. Computed where
    manifests are loaded (the manifest cache keeps them, Desired.hashes): a command that
    reads them from the cache or from its preload child never imports hashlib, and
    with it OpenSSL (see controller.digest)."""
    import hashlib

    return hashlib.sha256(json.dumps(spec_document(spec), sort_keys=True).encode()).hexdigest()[:16]
