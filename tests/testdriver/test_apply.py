"""apply against libvirt's test driver: create, update, prune, ownership, idempotence."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from controller import errors, manifest
from controller.adapter import Libvirt
from controller.cli import main
from controller.model import Kind, Ref
from controller.observe import observe
from controller.plan import Action, Policy
from controller.reconcile import ApplyResult, Session, apply
from tests.conftest import transactions
from tests.testdriver import manifests as m


def run(session: Session, root: Path, **policy: bool) -> ApplyResult:
    return apply(session, manifest.load([str(root)]), policy=Policy(**policy))


def live_names(session: Session, kind: Kind) -> set[str]:
    observed = observe(session.client)
    if kind is Kind.VOLUME:
        return {name for (_, name) in observed.volumes}
    return {ref.name for ref in observed.objects if ref.kind is kind}


def test_apply_creates_everything_then_a_second_apply_mutates_nothing(session, write_manifests) -> None:
    root = write_manifests(m.stack())
    result = run(session, root)
    assert result.converged, result.outcomes
    assert {c.action for c in result.plan.changes} == {Action.CREATE}
    assert "t-web" in live_names(session, Kind.VM)
    assert {"t-base", "t-web-root"} <= live_names(session, Kind.VOLUME)
    dom = session.client.domain("t-web")
    assert dom.state == "running"
    # the clone really is a copy-on-write overlay of the base volume
    web_root = observe(session.client).volumes[("t-images", "t-web-root")]
    assert web_root.spec.source_path == session.client.volume_path("t-images", "t-base")

    before = session.client.mutations
    again = run(session, root)
    assert again.plan.empty and again.converged
    assert session.client.mutations == before, "a converged apply must make no mutating libvirt call"


def test_the_host_size_is_read_for_a_vm_to_create_not_for_a_converged_plan(
        session, write_manifests, monkeypatch: pytest.MonkeyPatch) -> None:
    reads = []
    real = session.client.host
    monkeypatch.setattr(session.client, "host", lambda: reads.append(1) or real())
    root = write_manifests(m.stack())
    plan, _ = session.plan(manifest.load([str(root)]), policy=Policy())
    assert plan.changes and len(reads) == 1            # read once, when the first VM is admitted
    run(session, root)
    reads.clear()
    again, _ = session.plan(manifest.load([str(root)]), policy=Policy())
    assert again.empty and reads == []


def test_the_capabilities_are_read_once_beside_the_changes_a_new_vm_waits_for(
        session, write_manifests, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    reads: list[str] = []
    real = session.client.domain_types
    monkeypatch.setattr(session.client, "domain_types",
                        lambda: reads.append(threading.current_thread().name) or real())
    everything = m.stack()
    root = write_manifests({name: text for name, text in everything.items() if name != "web.yaml"})
    assert run(session, root).converged
    assert reads == [], "no VM to write: no capabilities"
    write_manifests(everything)
    result = run(session, root)
    assert result.converged and any(c.ref.kind is Kind.VM for c in result.plan.changes)
    assert reads == ["iaasctl-capabilities"]


def test_ownership_is_recorded_in_the_store_and_in_the_domain(session, write_manifests) -> None:
    root = write_manifests(m.stack())
    run(session, root)
    owned = session.store.owned()
    assert Ref(Kind.VM, "t-web") in owned
    assert owned[Ref(Kind.VM, "t-web")].source == str(root / "web.yaml")
    assert "urn:iaasctl:owner:1" in session.client.domain("t-web").config_xml


def test_memory_change_with_manual_policy_updates_the_definition_only(session, write_manifests) -> None:
    root = write_manifests(m.stack())
    run(session, root)
    write_manifests({"web.yaml": m.vm(memory="512MiB")})
    result = run(session, root)
    change = result.plan.changes[0]
    assert (change.action, change.disruption.value) == (Action.UPDATE, "restart-required")
    assert [(f.path, f.old, f.new) for f in change.fields] == [("spec.memory", "256MiB", "512MiB")]
    assert result.converged
    # the definition has the new memory, the running VM still the old: a note, not a change
    follow_up, _ = session.plan(manifest.load([str(root)]), policy=Policy())
    assert follow_up.empty
    assert [n.reason for n in follow_up.notes] == ["RestartRequired"]


def test_memory_change_with_auto_policy_restarts_the_vm(session, write_manifests) -> None:
    root = write_manifests(m.stack(restart="auto"))
    run(session, root)
    write_manifests({"web.yaml": m.vm(memory="512MiB", restart="auto")})
    result = run(session, root)
    assert result.plan.changes[0].disruption.value == "restart"
    assert result.converged
    follow_up, _ = session.plan(manifest.load([str(root)]), policy=Policy())
    assert follow_up.empty and not follow_up.notes
    live = observe(session.client).objects[Ref(Kind.VM, "t-web")]
    assert live.live is not None and live.live.memory == 512 << 20


def test_power_stopped_stops_and_running_starts_again(session, write_manifests) -> None:
    root = write_manifests(m.stack())
    run(session, root)
    write_manifests({"web.yaml": m.vm(power="stopped")})
    result = run(session, root)
    assert [c.action for c in result.plan.changes] == [Action.STOP]
    assert session.client.domain("t-web").state == "shutoff"
    write_manifests({"web.yaml": m.vm(power="running")})
    result = run(session, root)
    assert [c.action for c in result.plan.changes] == [Action.START]
    assert session.client.domain("t-web").state == "running"


def test_removing_a_manifest_deletes_its_objects_and_only_those(session, write_manifests) -> None:
    root = write_manifests(m.stack())
    run(session, root)
    (root / "web.yaml").unlink()
    result = run(session, root)
    assert [(c.action, str(c.ref)) for c in result.plan.changes] == [(Action.DELETE, "VirtualMachine/t-web")]
    assert result.converged
    assert "t-web" not in live_names(session, Kind.VM)
    assert "test" in live_names(session, Kind.VM), "the unmanaged domain must be left alone"
    assert Ref(Kind.VM, "t-web") not in session.store.owned()


def test_mass_deletion_is_refused_unless_allowed(session, write_manifests) -> None:
    root = write_manifests(m.stack())
    run(session, root)
    for name in ("web.yaml", "volumes.yaml", "network.yaml"):
        (root / name).unlink()
    refused = run(session, root)
    assert not refused.converged and not refused.outcomes
    assert all("--allow-mass-delete" in r.message for r in refused.plan.refusals)
    assert "t-web" in live_names(session, Kind.VM)
    allowed = run(session, root, allow_mass_delete=True)
    assert allowed.converged
    order = [str(c.ref) for c in allowed.plan.changes]
    assert set(order) == {"VirtualMachine/t-web", "Volume/t-web-root", "Volume/t-base", "Network/t-lab"}
    assert live_names(session, Kind.VM) == {"test"}
    assert live_names(session, Kind.NETWORK) == {"default"}


def test_deletes_run_in_reverse_dependency_order(session, write_manifests) -> None:
    root = write_manifests(m.stack())
    run(session, root)
    for name in ("web.yaml", "volumes.yaml", "network.yaml", "pool.yaml"):
        (root / name).unlink()
    started: list[str] = []
    result = apply(session, manifest.load([str(root)]), policy=Policy(allow_mass_delete=True),
                   progress=lambda change, outcome: started.append(str(change.ref)) if outcome is None else None)
    assert result.converged
    assert started.index("VirtualMachine/t-web") < started.index("Volume/t-web-root")
    assert started.index("Volume/t-web-root") < started.index("Volume/t-base")
    assert started.index("Volume/t-base") < started.index("StoragePool/t-images")
    assert started.index("VirtualMachine/t-web") < started.index("Network/t-lab")


def test_protected_objects_are_not_deleted(session, write_manifests) -> None:
    root = write_manifests(m.stack(extra="  protect: true\n"))
    run(session, root)
    (root / "web.yaml").unlink()
    result = run(session, root)
    assert not result.converged
    assert ["protected" in r.message for r in result.plan.refusals] == [True]
    assert "t-web" in live_names(session, Kind.VM)


def test_an_unmanaged_object_of_the_same_name_is_a_conflict_until_adopted(session, write_manifests) -> None:
    root = write_manifests({"default.yaml": m.DEFAULT_NETWORK})
    result = run(session, root)
    assert not result.converged
    (refusal,) = result.plan.refusals
    assert "not managed by iaasctl" in refusal.message and "--adopt" in refusal.message
    adopted = run(session, root, adopt=True)
    assert adopted.converged, adopted.remaining
    assert Ref(Kind.NETWORK, "default") in session.store.owned()


def test_ownership_of_domains_survives_a_lost_state_file(session, write_manifests, tmp_path) -> None:
    root = write_manifests(m.stack())
    run(session, root)
    (root / "web.yaml").unlink()
    lost = Session(session.config, session.client, type(session.store)(tmp_path / "fresh-state"))
    result = run(lost, root)
    # The domain carries its owner marker, so it is still known as ours and pruned...
    assert [str(c.ref) for c in result.plan.changes] == ["VirtualMachine/t-web"]
    assert live_names(session, Kind.VM) == {"test"}
    # ...networks carry one too; pools and volumes cannot, so they are conflicts until adopted.
    assert sorted(str(r.ref) for r in result.plan.refusals) == [
        "StoragePool/t-images", "Volume/t-base", "Volume/t-web-root"]
    assert run(lost, root, adopt=True).converged


def test_volume_shrink_and_format_change_are_refused(session, write_manifests) -> None:
    root = write_manifests(m.stack())
    run(session, root)
    write_manifests({"volumes.yaml": m.VOLUMES.replace("size: 2GiB", "size: 1GiB")})
    result = run(session, root)
    (refusal,) = result.plan.refusals
    assert refusal.message.startswith(f"{root / 'volumes.yaml'}:") and "shrinking" in refusal.message
    write_manifests({"volumes.yaml": m.VOLUMES.replace("format: qcow2", "format: raw")})
    result = run(session, root)
    assert any("allowReplace" in r.message for r in result.plan.refusals)
    assert not result.outcomes


def test_volume_replace_with_opt_in(session, write_manifests) -> None:
    root = write_manifests({"pool.yaml": m.POOL, "vol.yaml": m.VOLUMES.split("---")[0]})
    run(session, root)
    opted = m.VOLUMES.split("---")[0].replace("format: qcow2", "format: raw").replace(
        "name: t-base\n", "name: t-base\n  allowReplace: true\n")
    write_manifests({"vol.yaml": opted})
    result = run(session, root)
    assert [c.action for c in result.plan.changes] == [Action.REPLACE]
    assert result.converged
    assert observe(session.client).volumes[("t-images", "t-base")].spec.format == "raw"


def test_volume_grow_is_planned_in_place(session, write_manifests) -> None:
    """The test driver has no volume resize (virStorageVolResize is not in its driver
    table), so this tier checks the plan and the clear failure; the real-host tier
    checks the grow itself."""
    root = write_manifests(m.stack())
    run(session, root)
    write_manifests({"volumes.yaml": m.VOLUMES.replace("size: 2GiB", "size: 3GiB")})
    result = run(session, root)
    (change,) = result.plan.changes
    assert (change.action, [(f.path, f.old, f.new) for f in change.fields]) == (
        Action.UPDATE, [("spec.size", "2GiB", "3GiB")])
    (outcome,) = result.outcomes
    assert not outcome.ok and "not supported" in (outcome.error or "")


class _FailingStart(Libvirt):
    """Our own adapter with one fault injected: the test driver starts any domain."""

    def start_domain(self, name: str) -> None:
        self.mutations += 1
        raise errors.InvalidForHost("cannot start: injected failure", code=9)


def test_a_vm_that_fails_to_start_is_rolled_back_and_others_proceed(session, write_manifests) -> None:
    root = write_manifests(m.stack())
    failing = Session(session.config, _FailingStart(session.config.connect), session.store)
    try:
        result = run(failing, root)
        by_ref = {str(o.change.ref): o for o in result.outcomes}
        assert not by_ref["VirtualMachine/t-web"].ok
        assert "injected failure" in (by_ref["VirtualMachine/t-web"].error or "")
        assert by_ref["Network/t-lab"].ok and by_ref["Volume/t-web-root"].ok
        assert "t-web" not in live_names(session, Kind.VM), "no defined-but-broken domain may remain"
        assert Ref(Kind.VM, "t-web") not in session.store.owned()
    finally:
        failing.client.close()


class _BuggyNetwork(Libvirt):
    """A bug, not a libvirt failure: an exception that is no IaasError."""

    def define_network(self, xml: str) -> str:
        raise ZeroDivisionError("a bug in a step")


def test_a_bug_in_a_step_reaches_the_caller_after_the_other_workers_finish(session, write_manifests) -> None:
    import threading

    root = write_manifests(m.stack())
    buggy = Session(session.config, _BuggyNetwork(session.config.connect), session.store)
    try:
        with pytest.raises(ZeroDivisionError, match="a bug in a step"):
            run(buggy, root)
    finally:
        buggy.client.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("iaasctl-exec")], "workers left running"
    assert "t-images" in live_names(session, Kind.POOL), "the change beside it ran to its end"


def test_host_admission_refuses_a_vm_larger_than_the_host(session, write_manifests) -> None:
    root = write_manifests(m.stack(memory="64GiB"))
    run(session, root)  # creates it: the test driver would even start it
    write_manifests({"web.yaml": m.vm(memory="128GiB")})
    the_plan, _ = session.plan(manifest.load([str(root)]), policy=Policy())
    assert any("more than the host's memory" in r.message for r in the_plan.refusals)


# -- the command line, in process ------------------------------------------------------


def cli(session: Session, *args: str) -> int:
    return main(["--connect", session.config.connect, "--state-dir", session.config.state_dir, *args])


def test_cli_exit_statuses_and_json_plan(session, write_manifests, capsys) -> None:
    root = write_manifests(m.stack())
    assert cli(session, "validate", str(root)) == 0
    assert "documents valid" in capsys.readouterr().out
    assert cli(session, "plan", "-f", str(root), "-o", "json") == 2
    doc = json.loads(capsys.readouterr().out)
    assert {(c["kind"], c["name"], c["action"]) for c in doc["changes"]} >= {("VirtualMachine", "t-web", "create")}
    assert set(doc["changes"][0]) >= {"kind", "name", "action", "fields", "disruption", "reason"}
    assert cli(session, "apply", "-f", str(root), "--yes") == 0
    assert cli(session, "plan", "-f", str(root)) == 0
    assert "No changes" in capsys.readouterr().out
    assert cli(session, "get", "vms") == 0
    table = capsys.readouterr().out
    assert "t-web" in table and "running" in table
    assert cli(session, "describe", "vm", "t-web", "-o", "json") == 0
    described = json.loads(capsys.readouterr().out)
    assert described["managed"] is True and described["live"]["state"] == "running"
    assert cli(session, "describe", "vm", "nope") == 1


def test_cli_invalid_manifest_changes_nothing(session, write_manifests, capsys) -> None:
    root = write_manifests(m.stack(memory="lots"))
    assert cli(session, "apply", "-f", str(root), "--yes") == 1
    err = capsys.readouterr().err
    assert f"{root / 'web.yaml'}:7: spec.memory: 'lots' is not a size" in err
    assert session.client.mutations == 0
    assert live_names(session, Kind.VM) == {"test"}


def test_a_second_apply_on_the_same_state_dir_is_refused(session, write_manifests, capsys) -> None:
    from controller.state import exclusive

    root = write_manifests(m.stack())
    with exclusive(session.config.state_dir):
        assert cli(session, "apply", "-f", str(root), "--yes") == 1
    err = capsys.readouterr().err
    assert "another iaasctl holds" in err and "lock" in err
    import os

    assert f"(pid {os.getpid()})" in err
    assert session.client.mutations == 0


def test_host_paths_inside_the_state_directory_are_rejected(session, write_manifests, capsys) -> None:
    state = session.config.state_dir
    root = write_manifests({"pool.yaml": m.POOL.replace("/t-images", f"{state}/pools/images")})
    assert cli(session, "plan", "-f", str(root)) == 1
    err = capsys.readouterr().err
    assert f"{root / 'pool.yaml'}:6: spec.path: {state}/pools/images is inside the state directory" in err
    assert session.client.mutations == 0


def test_delete_tears_down_what_the_manifests_declare(session, write_manifests, capsys) -> None:
    root = write_manifests(m.stack())
    assert cli(session, "apply", "-f", str(root), "--yes") == 0
    assert cli(session, "delete", "-f", str(root / "web.yaml"), "--yes") == 0
    assert live_names(session, Kind.VM) == {"test"}
    assert "t-lab" in live_names(session, Kind.NETWORK), "only what the given manifests declare is deleted"
    assert cli(session, "delete", "-f", str(root), "--yes") == 0
    assert live_names(session, Kind.NETWORK) == {"default"}
    assert "t-images" not in live_names(session, Kind.POOL)
    assert session.store.owned() == {}


def test_protect_added_to_an_unchanged_object_counts_at_once(session, write_manifests) -> None:
    root = write_manifests(m.stack())
    run(session, root)
    write_manifests({"web.yaml": m.vm(extra="  protect: true\n")})
    assert cli(session, "apply", "-f", str(root), "--yes") == 0   # nothing to change in libvirt...
    (root / "web.yaml").unlink()
    result = run(session, root)                                    # ...but the protection holds
    assert [r.ref for r in result.plan.refusals] == [Ref(Kind.VM, "t-web")]
    assert "t-web" in live_names(session, Kind.VM)


def test_a_checkout_reached_through_a_symlink_is_pruned_all_the_same(session, write_manifests, tmp_path) -> None:
    real = write_manifests(m.stack())
    link = tmp_path / "link"
    link.symlink_to(real)
    run(session, link)
    (real / "web.yaml").unlink()
    for root in (link, real):
        the_plan, _ = session.plan(manifest.load([str(root)]), policy=Policy())
        assert [(c.action, str(c.ref)) for c in the_plan.changes] == [(Action.DELETE, "VirtualMachine/t-web")]


def test_usage_errors_and_unusable_state_dirs_are_errors_not_changes(session, write_manifests, capsys) -> None:
    assert main(["plan"]) == 1                                   # -f missing: 1, never 2 ("changes")
    assert "the following arguments are required: -f" in capsys.readouterr().err
    root = write_manifests(m.stack())
    assert main(["--connect", "test:///default", "--state-dir", "/proc/no-such-dir", "apply", "-f", str(root)]) == 1
    assert "iaasctl: error: /proc/no-such-dir" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["apply", "delete"])
@pytest.mark.parametrize(("value", "message"), [("0", "0 must be at least 1"), ("-1", "-1 must be at least 1"),
                                                ("two", "expected a whole number, got 'two'")])
def test_a_parallelism_below_one_is_a_usage_error(session, write_manifests, capsys, command, value, message) -> None:
    """-1 once made the executor spin forever with nothing in flight, and 0 was ignored."""
    root = write_manifests(m.stack())
    assert cli(session, "apply", "-f", str(root), "--yes") == 0
    before = session.client.mutations
    assert cli(session, command, "-f", str(root), "--yes", f"--parallelism={value}") == 1
    assert f"argument --parallelism: {message}" in capsys.readouterr().err
    assert session.client.mutations == before


def test_delete_takes_a_parallelism_like_apply(session, write_manifests, capsys) -> None:
    root = write_manifests(m.stack())
    for command in ("apply", "delete"):
        capsys.readouterr()
        assert cli(session, command, "-f", str(root), "--yes", "--parallelism", "1") == 0
        progress = [line.split()[0] for line in capsys.readouterr().err.splitlines() if line.startswith("  ")]
        assert len(progress) >= 8 and progress == ["...", "ok"] * (len(progress) // 2), "one change at a time"
    assert live_names(session, Kind.VM) == {"test"} and session.store.owned() == {}


def test_validate_checks_paths_against_the_state_dir_too(session, write_manifests, capsys) -> None:
    state = session.config.state_dir
    root = write_manifests({"pool.yaml": m.POOL.replace("/t-images", f"{state}/pools/images")})
    assert cli(session, "validate", str(root)) == 1
    assert "is inside the state directory" in capsys.readouterr().err


def test_an_adopted_domain_carries_the_owner_marker(session, write_manifests, tmp_path) -> None:
    """A domain someone else defined, adopted with a manifest that matches it, is marked
    inside the domain, so the adoption survives a lost state file."""
    session.client.define_domain("<domain type='test'><name>theirs</name><memory unit='MiB'>256</memory>"
                                 "<vcpu>1</vcpu><os><type>hvm</type></os></domain>")
    root = write_manifests({"theirs.yaml": """\
apiVersion: iaas/v1
kind: VirtualMachine
metadata:
  name: theirs
spec:
  vcpus: 1
  memory: 256MiB
  power: stopped
"""})
    assert not run(session, root).converged, "not ours until adopted"
    result = run(session, root, adopt=True)
    assert [c.action for c in result.plan.changes] == [Action.ADOPT] and result.converged
    assert "urn:iaasctl:owner:1" in session.client.domain("theirs").config_xml
    lost = Session(session.config, session.client, type(session.store)(tmp_path / "fresh-state"))
    assert run(lost, root).converged, "without a state file the marker still says it is ours"


def test_apply_does_not_execute_a_plan_other_than_the_one_shown(session, write_manifests) -> None:
    from controller.errors import PlanChanged

    root = write_manifests(m.stack())
    desired = manifest.load([str(root)])
    shown, _ = session.plan(desired, policy=Policy())
    session.client.define_network("<network><name>t-lab</name></network>")  # someone else, meanwhile
    with pytest.raises(PlanChanged):
        apply(session, desired, policy=Policy(), shown=shown)
    assert live_names(session, Kind.VM) == {"test"}


class _Crash(BaseException):
    """Stands for the process dying: no `except IaasError` handler (no rollback) runs."""


def run_until_crash(session: Session, adapter: type[Libvirt], root: Path) -> None:
    """An apply through an adapter that "dies" at one step, sharing the session's store."""
    crashing = Session(session.config, adapter(session.config.connect), session.store)
    try:
        with pytest.raises(_Crash):
            run(crashing, root)
    finally:
        crashing.client.close()


class _CrashAfterVolumeCreate(Libvirt):
    def create_volume(self, pool: str, xml: str) -> str:
        path = super().create_volume(pool, xml)
        raise _Crash(path)


def test_a_crash_between_creating_a_volume_and_recording_it_is_recovered(session, write_manifests) -> None:
    """The journal says the volume was being created: on the next start it is recorded
    as ours, neither created twice nor left as an unowned conflict (RELIABILITY F4)."""
    root = write_manifests({"pool.yaml": m.POOL, "vol.yaml": m.VOLUMES.split("---")[0]})
    run_until_crash(session, _CrashAfterVolumeCreate, root)
    assert [e.ref for e in session.store.journal()] == [Ref(Kind.VOLUME, "t-base")]
    assert Ref(Kind.VOLUME, "t-base") not in session.store.owned()
    assert session.recover() == ["recovered Volume/t-base: created by an interrupted run, recorded as ours"]
    assert session.store.journal() == []
    result = run(session, root)
    assert result.plan.empty and result.converged
    assert sorted(name for (pool, name) in observe(session.client).volumes if pool == "t-images") == ["t-base"]


def test_an_apply_syncs_each_journal_entry_and_its_end_and_nothing_a_change_leaves(
        session, write_manifests) -> None:
    """A create's journal entry is synced before its first libvirt call; the records
    changes leave are not synced on their own (no fsync between a network and the VM
    that waits for it) but by the next entry or the run's end, the apply's last commit.
    A power loss between takes only what the entry recovers (the test above)."""
    root = write_manifests(m.stack())
    seen = transactions(session.store)
    result = run(session, root)
    assert result.converged

    def writes(statements: list[str], *prefixes: str) -> bool:
        return any(s.startswith(prefixes) for s in statements)

    entries = [t for t in seen if writes(t[1], "INSERT INTO journal")]
    left = [t for t in seen if not writes(t[1], "INSERT INTO journal", "UPDATE runs SET finished")]
    assert entries and all(synced for synced, _ in entries)
    assert sum(s.startswith("INSERT INTO journal") for _, st in entries for s in st) == 5
    assert left and not any(synced for synced, _ in left), left
    assert seen[-1][0] and writes(seen[-1][1], "UPDATE runs SET finished")   # the end: all of it durable
    assert len(session.store.owned()) == 5 and session.store.journal() == []


def test_deletes_that_wait_for_a_vm_to_let_go_run_after_it_in_order(session, write_manifests) -> None:
    """The stopped VM drops its disk while the disk, its base and the pool leave the
    manifests: the disk is deleted after the VM's update, then its base, then the pool."""
    root = write_manifests(m.stack(power="stopped"))
    run(session, root)
    (root / "volumes.yaml").unlink()
    (root / "pool.yaml").unlink()
    write_manifests({"web.yaml": m.vm(power="stopped").replace("  disks:\n    - volume: t-web-root\n", "")})
    result = run(session, root, allow_mass_delete=True)
    assert result.converged, [(str(o.change.ref), o.error) for o in result.outcomes if not o.ok]
    assert "t-images" not in live_names(session, Kind.POOL)
    assert live_names(session, Kind.VOLUME).isdisjoint({"t-base", "t-web-root"})


class _CrashAfterUndefine(Libvirt):
    def undefine_domain(self, name: str) -> None:
        super().undefine_domain(name)
        raise _Crash(name)


def test_a_crash_in_the_middle_of_a_delete_is_finished(session, write_manifests) -> None:
    root = write_manifests(m.stack())
    run(session, root)
    (root / "web.yaml").unlink()
    run_until_crash(session, _CrashAfterUndefine, root)
    assert Ref(Kind.VM, "t-web") in session.store.owned(), "the crash came before the record was dropped"
    assert session.store.journal() == [], "a delete needs no journal entry: its record is the reminder"
    assert session.recover() == []
    result = run(session, root)
    assert result.converged
    assert Ref(Kind.VM, "t-web") not in session.store.owned()
    assert live_names(session, Kind.VM) == {"test"}


def test_only_changes_nothing_waits_for_are_let_go_to_the_background(session, write_manifests) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from controller.execute import Background

    root = write_manifests(m.stack())
    with ThreadPoolExecutor(max_workers=2) as pool, Libvirt(session.client.uri) as own:
        result = apply(session, manifest.load([str(root)]), policy=Policy(),
                       background=Background(pool, own, wanted=lambda change: True))
        # the pool, the volumes and the network are waited for by the VM: done in the pass
        assert {o.change.ref for o in result.pending} == {Ref(Kind.VM, "t-web")}
        assert all(o.ok for o in result.outcomes) and not result.converged
        final = result.pending[0].pending.result(timeout=10)   # type: ignore[union-attr]
    assert final.ok and final.pending is None and final.seconds > 0
    assert session.client.domain("t-web").state == "running"
    runs = session.store.runs()
    assert runs[0]["summary"]["pending"] == 1 and runs[0]["result"] == "not-converged"


def _count_in_flight(monkeypatch: pytest.MonkeyPatch, slow: Kind, seconds: float) -> dict[str, int]:
    """Changes run through a counter of those in flight at once (`most`); changes to
    objects of kind `slow` take `seconds` longer."""
    import controller.execute as executor

    real, lock, flight = executor.run_change, threading.Lock(), {"now": 0, "most": 0}

    def counted(change, ctx) -> None:  # type: ignore[no-untyped-def]
        with lock:
            flight["now"] += 1
            flight["most"] = max(flight["most"], flight["now"])
        try:
            if change.ref.kind is slow:
                time.sleep(seconds)
            real(change, ctx)
        finally:
            with lock:
                flight["now"] -= 1

    monkeypatch.setattr(executor, "run_change", counted)
    return flight


def test_changes_that_wait_for_guests_get_all_workers_at_once(session, write_manifests, monkeypatch) -> None:
    """Starting or destroying a guest is a wait (seconds under TCG): twelve VMs to
    create, then to delete, are all in flight at once, without waiting to see whether
    the first eight finish quickly (libvirtd would serve the late ones' connections
    behind the destroys under way)."""
    import controller.execute as executor

    flight = _count_in_flight(monkeypatch, Kind.VM, 0.2)   # the guest's start or stop
    monkeypatch.setattr(executor, "WIDEN_AFTER", 5.0)   # only a waiting change widens
    diskless = m.vm().replace("    - volume: t-web-root\n", "").replace("disks:\n", "disks: []\n")
    vms = "---\n".join(diskless.replace("t-web", f"t-vm{i}").replace("00:11", f"00:{i + 32:02x}") for i in range(12))
    root = write_manifests({"network.yaml": m.NETWORK, "vms.yaml": vms})
    wide = Session(replace(session.config, parallelism=32), session.client, session.store)
    assert run(wide, root).converged
    assert {f"t-vm{i}" for i in range(12)} <= live_names(session, Kind.VM)
    assert flight["most"] == 12, "creates"
    flight["most"] = 0
    (root / "vms.yaml").unlink()
    assert run(wide, root, prune=True, allow_mass_delete=True).converged
    assert not {f"t-vm{i}" for i in range(12)} & live_names(session, Kind.VM)
    assert flight["most"] == 12, "deletes"


@pytest.mark.parametrize(("seconds", "widest"), [(0.0, range(1, 9)), (0.12, range(20, 21))])
def test_quick_changes_keep_to_a_few_workers_and_waits_widen_to_all(session, write_manifests, monkeypatch,
                                                                    seconds, widest) -> None:
    """Each worker opens a connection of its own, which costs libvirtd CPU: changes that
    finish quickly are served by the first eight workers, and only when none of those
    finishes for a while (changes that wait) do the rest of the parallelism start."""
    import controller.execute as executor

    flight = _count_in_flight(monkeypatch, Kind.VOLUME, seconds)   # a change that waits, as a guest's stop does
    if not seconds:   # quick: however slow this machine is now
        monkeypatch.setattr(executor, "WIDEN_AFTER", 2.0)
    volumes = "---\n".join(f"apiVersion: iaas/v1\nkind: Volume\nmetadata: {{name: t-v{i}}}\n"
                           f"spec: {{pool: t-images, size: 1MiB}}\n" for i in range(20))
    root = write_manifests({"pool.yaml": m.POOL, "volumes.yaml": volumes})
    wide = Session(replace(session.config, parallelism=32), session.client, session.store)
    result = run(wide, root)
    assert result.converged and len(live_names(session, Kind.VOLUME) & {f"t-v{i}" for i in range(20)}) == 20
    assert flight["most"] in widest
