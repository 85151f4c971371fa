"""VirtualMachine: libvirt domains. Rendering and parsing live in their own modules;
this one compares a desired VM with the persistent definition of a live one."""

from __future__ import annotations

from controller.kinds.base import FieldDiff, UpdateMode, compare
from controller.kinds.vm.parse import parse
from controller.kinds.vm.render import RenderContext, VolumeRef, render
from controller.model import DiskSpec, NicSpec, VMSpec
from controller.units import format_size

__all__ = ["RenderContext", "VolumeRef", "diff", "parse", "render", "restart_pending"]

# Everything about the virtual hardware is read at boot: the definition can change
# at once, the running VM sees it after a restart. Autostart is a flag on the host.
_RESTART = UpdateMode.RESTART


def diff(desired: VMSpec, observed: VMSpec) -> list[FieldDiff]:
    """Differences between the manifest and a domain definition (persistent or live).
    Power is not a field here: the planner compares it with the domain's state."""
    return [
        *compare("spec.vcpus", observed.vcpus, desired.vcpus, _RESTART),
        *compare("spec.memory", format_size(observed.memory), format_size(desired.memory), _RESTART),
        *compare("spec.firmware", observed.firmware, desired.firmware, _RESTART),
        *compare("spec.boot", _boot_text(observed), _boot_text(desired), _RESTART),
        *compare("spec.disks", _disks_text(observed.disks), _disks_text(desired.disks), _RESTART),
        *compare("spec.networks", _nics_text(observed.nics), _nics_text(desired.nics, observed.nics), _RESTART),
        *compare("spec.autostart", observed.autostart, desired.autostart, UpdateMode.LIVE),
    ]


def restart_pending(config: VMSpec, live: VMSpec) -> list[FieldDiff]:
    """Fields whose new value is in the persistent definition but not yet in the
    running VM: they wait only for a restart."""
    return [d for d in diff(config, live) if d.mode is _RESTART]


def _boot_text(spec: VMSpec) -> str | None:
    if spec.boot is None:
        return None
    parts = [f"kernel={spec.boot.kernel}"]
    if spec.boot.initrd:
        parts.append(f"initrd={spec.boot.initrd}")
    if spec.boot.cmdline:
        parts.append(f"cmdline={spec.boot.cmdline}")
    return " ".join(parts)


def _disks_text(disks: tuple[DiskSpec, ...]) -> list[str]:
    return [f"{d.volume}({d.bus}" + (f",boot={d.boot_order})" if d.boot_order else ")") for d in disks]


def _nics_text(nics: tuple[NicSpec, ...], observed: tuple[NicSpec, ...] | None = None) -> list[str]:
    """NICs as text; a MAC the manifest leaves out takes the one libvirt assigned
    (at the same position, on the same network), so a generated MAC is not drift."""
    out = []
    for index, nic in enumerate(nics):
        mac = nic.mac
        if mac is None and observed is not None and index < len(observed):
            if observed[index].network == nic.network:
                mac = observed[index].mac
        out.append(f"{nic.network}({nic.model},{mac or 'auto'})")
    return out
