"""Manifest loading, data-driven: every `manifests/bad/<case>` (a file or a directory) must
fail with exactly the lines of `<case>.expected`; `manifests/good/` must load into
exactly the specs below.

To add a case, drop `bad/<case>.yaml` (or a `bad/<case>/` tree) and write the
`file:line: json.path: message` lines you expect into `bad/<case>.expected`.
File names in those lines are relative to `bad/`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.errors import ManifestInvalid
from controller.manifest import load
from controller.model import (
    BootSpec,
    DhcpHost,
    DiskSpec,
    IPv4Spec,
    Meta,
    NetworkSpec,
    NicSpec,
    PoolSpec,
    Source,
    VMSpec,
    VolumeSpec,
)

HERE = Path(__file__).parent / "manifests"
BAD = HERE / "bad"
GOOD = HERE / "good"
CASES = sorted(p.name for p in BAD.iterdir() if p.suffix == ".yaml" or p.is_dir())
GiB = 1 << 30
NAME_63 = "a23456789012345678901234567890123456789012345678901234567890123"


def test_every_case_has_expectations() -> None:
    expected = {p.stem for p in BAD.glob("*.expected")}
    cases = {Path(c).stem for c in CASES}
    assert cases == expected, f"cases without .expected: {cases - expected}; orphans: {expected - cases}"


@pytest.mark.parametrize("case", CASES)
def test_bad_manifests(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(BAD)
    want = [line for line in (BAD / f"{Path(case).stem}.expected").read_text().splitlines() if line]
    with pytest.raises(ManifestInvalid) as caught:
        load([case])
    got = [str(problem) for problem in caught.value.problems]
    assert got == want, "\n--- got:\n" + "\n".join(got) + "\n--- want:\n" + "\n".join(want)


def meta(name: str, file: str, line: int, **kwargs: object) -> Meta:
    return Meta(name=name, source=Source(f"good/{file}", line), **kwargs)  # type: ignore[arg-type]


EXPECTED_GOOD = (
    NetworkSpec(
        meta=meta("lab", "networks/lab.yaml", 1, labels=(("app", "web"),)),
        mode="nat", bridge="virbr-lab", domain="lab.internal", autostart=True,
        ipv4=IPv4Spec(
            cidr="10.10.0.0/24", gateway="10.10.0.1", dhcp_start="10.10.0.100", dhcp_end="10.10.0.200",
            hosts=(DhcpHost("52:54:00:00:00:11", "10.10.0.11", "web-1"), DhcpHost("52:54:00:ab:cd:12", "10.10.0.12")),
        ),
    ),
    NetworkSpec(meta=meta("backend", "networks/others.yaml", 1), mode="isolated"),
    NetworkSpec(meta=meta("routed", "networks/others.yaml", 8), mode="routed", autostart=False,
                ipv4=IPv4Spec(cidr="10.20.0.0/16", gateway="10.20.255.254")),
    NetworkSpec(meta=meta("host-bridge", "networks/others.yaml", 19), mode="bridge", bridge="br0"),
    NetworkSpec(meta=meta("static-only", "networks/others.yaml", 27), mode="isolated",
                ipv4=IPv4Spec(cidr="192.168.50.0/30", gateway="192.168.50.1",
                              hosts=(DhcpHost("52:54:00:00:50:02", "192.168.50.2"),))),
    PoolSpec(meta=meta("images", "pools.yaml", 2), path="/var/lib/iaasctl/pools/images"),
    PoolSpec(meta=meta("scratch", "pools.yaml", 9, labels=(("app", "lab"), ("tier", "fast")), protect=True),
             path="/srv/scratch", type="dir", autostart=False),
    VMSpec(
        meta=meta("web-1", "vms/web.yaml", 2, labels=(("app", "web"), ("role", "frontend"))),
        vcpus=2, memory=2 * GiB, power="stopped", restart_policy="auto", autostart=True, firmware="uefi",
        boot=BootSpec("/var/lib/iaasctl/images/vmlinuz", "/var/lib/iaasctl/images/initrd.gz",
                      "console=ttyS0 root=/dev/vda1"),
        disks=(DiskSpec("web-1-root", "virtio", 1), DiskSpec("web-1-data", "scsi")),
        nics=(NicSpec("lab", "52:54:00:00:00:11", "virtio"), NicSpec("backend", "52:54:00:ab:cd:ef", "e1000"),
              NicSpec("lab")),
    ),
    VMSpec(meta=meta("tiny", "vms/web.yaml", 35), vcpus=1, memory=16 << 20),
    VolumeSpec(meta=meta("debian-base", "volumes.yml", 1, protect=True), pool="images", size=2 * GiB,
               source_path="/srv/images/debian-12.qcow2"),
    VolumeSpec(meta=meta("web-1-root", "volumes.yml", 12), pool="images", size=10 * GiB,
               source_volume="debian-base"),
    VolumeSpec(meta=meta("web-1-data", "volumes.yml", 23, allow_replace=True), pool="scratch", size=512 << 20,
               format="raw"),
    VolumeSpec(meta=meta(NAME_63, "volumes.yml", 33), pool="images", size=1 << 40),
)


def test_good_set_loads_into_exactly_these_specs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(HERE)
    desired = load(["good"])
    assert desired.specs == EXPECTED_GOOD
    assert desired.roots == (str(GOOD.resolve()),)


def test_longest_name_is_63_characters() -> None:
    assert len(NAME_63) == 63


def test_field_lines_point_at_every_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(HERE)
    specs = {(s.kind.value, s.meta.name): s for s in load(["good"]).specs}
    vm = specs[("VirtualMachine", "web-1")].meta
    assert vm.field_lines["metadata.name"] == 5
    assert vm.field_lines["spec.memory"] == 11
    assert vm.field_lines["spec.disks"] == 20            # a block list: the line of its key
    assert vm.field_lines["spec.disks[0].volume"] == 21
    assert vm.field_lines["spec.disks[1].bus"] == 25
    assert vm.field_lines["spec.networks[1].mac"] == 31
    assert vm.where("spec.networks[1].mac") == "good/vms/web.yaml:31: spec.networks[1].mac"
    lab = specs[("Network", "lab")].meta
    assert lab.field_lines["spec.ipv4.hosts[1].mac"] == 20
    assert lab.field_lines["metadata.labels.app"] == 5
    assert specs[("Volume", "web-1-root")].meta.field_lines["spec.source.volume"] == 21


def test_paths_are_spelled_as_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(HERE)
    desired = load(["./good/pools.yaml", "good/networks/"])
    assert [s.meta.source.file for s in desired.specs] == [
        "./good/pools.yaml", "./good/pools.yaml", "good/networks/lab.yaml"] + ["good/networks/others.yaml"] * 4
    assert desired.roots == (str(GOOD / "pools.yaml"), str(GOOD / "networks"))


def test_problems_of_all_files_are_reported_together(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(BAD)
    with pytest.raises(ManifestInvalid) as caught:
        load(["sizes.yaml", "enums.yaml", "alias_bomb.yaml"])
    files = {problem.file for problem in caught.value.problems}
    assert files == {"sizes.yaml", "enums.yaml", "alias_bomb.yaml"}
    assert str(caught.value).splitlines() == [str(p) for p in caught.value.problems]


def test_partial_load_allows_references_outside_the_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    """`delete -f vms/web.yaml` loads one file of a set: its references point elsewhere."""
    monkeypatch.chdir(HERE)
    with pytest.raises(ManifestInvalid, match="no Volume named 'web-1-root' is defined"):
        load(["good/vms/web.yaml"])
    desired = load(["good/vms/web.yaml"], partial=True)
    assert [s.meta.name for s in desired.specs] == ["web-1", "tiny"]
    with pytest.raises(ManifestInvalid, match="duplicate key"):     # every other check still runs
        load(["bad/duplicate_key.yaml"], partial=True)
