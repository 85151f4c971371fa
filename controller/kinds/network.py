"""Network: libvirt virtual networks (nat, isolated, routed, or attached to an
existing host bridge). Render, parse back, compare."""

from __future__ import annotations

import ipaddress
from xml.etree import ElementTree as ET

from controller.kinds.base import (
    FieldDiff,
    OwnerMark,
    UpdateMode,
    child,
    compare,
    set_owner,
    template,
    text,
    to_xml,
)
from controller.model import DhcpHost, IPv4Spec, Meta, NetworkSpec, Source

_FORWARD = {"nat": "nat", "routed": "route", "bridge": "bridge"}  # isolated: no <forward>
_MODE_OF_FORWARD = {v: k for k, v in _FORWARD.items()}


def render(spec: NetworkSpec, *, owner: OwnerMark, uuid: str | None = None, bridge: str | None = None) -> str:
    """Network XML. `uuid` and `bridge` carry over what libvirt assigned, so that a
    redefinition updates the same network instead of clashing with it."""
    root = template("network_template.xml")
    child(root, "name").text = spec.meta.name
    if uuid:
        ET.SubElement(root, "uuid").text = uuid
    set_owner(child(root, "metadata"), owner)
    if spec.mode in _FORWARD:
        ET.SubElement(root, "forward", {"mode": _FORWARD[spec.mode]})
    bridge_name = spec.bridge or bridge
    if spec.mode == "bridge":
        ET.SubElement(root, "bridge", {"name": bridge_name or ""})
    elif bridge_name:
        ET.SubElement(root, "bridge", {"name": bridge_name, "stp": "on", "delay": "0"})
    if spec.domain:
        ET.SubElement(root, "domain", {"name": spec.domain, "localOnly": "yes"})
    if spec.ipv4:
        _render_ipv4(root, spec.ipv4)
    return to_xml(root)


def _render_ipv4(root: ET.Element, ipv4: IPv4Spec) -> None:
    prefix = ipaddress.ip_network(ipv4.cidr).prefixlen
    ip = ET.SubElement(root, "ip", {"family": "ipv4", "address": ipv4.gateway, "prefix": str(prefix)})
    if ipv4.dhcp_start or ipv4.hosts:
        dhcp = ET.SubElement(ip, "dhcp")
        if ipv4.dhcp_start and ipv4.dhcp_end:
            ET.SubElement(dhcp, "range", {"start": ipv4.dhcp_start, "end": ipv4.dhcp_end})
        for host in ipv4.hosts:
            dhcp.append(host_element(host))


def host_element(host: DhcpHost) -> ET.Element:
    attrs = {"mac": host.mac, "ip": host.ip}
    if host.hostname:
        attrs["name"] = host.hostname
    return ET.Element("host", attrs)


def host_xml(host: DhcpHost) -> str:
    """One <host> element, for libvirt's live network update."""
    return ET.tostring(host_element(host), encoding="unicode")


def parse(xml: str | ET.Element, *, autostart: bool) -> NetworkSpec:
    root = ET.fromstring(xml) if isinstance(xml, str) else xml   # observe parses once for all readers
    forward = root.find("forward")
    mode = _MODE_OF_FORWARD.get(forward.get("mode", "nat"), "nat") if forward is not None else "isolated"
    bridge = root.find("bridge")
    domain = root.find("domain")
    return NetworkSpec(
        meta=Meta(name=text(root, "name") or "", source=Source("<libvirt>", 0)),
        mode=mode,
        bridge=bridge.get("name") if bridge is not None else None,
        domain=domain.get("name") if domain is not None else None,
        autostart=autostart,
        ipv4=_parse_ipv4(root),
    )


def _parse_ipv4(root: ET.Element) -> IPv4Spec | None:
    for ip in root.findall("ip"):
        if ip.get("family", "ipv4") != "ipv4" or not ip.get("address"):
            continue
        mask = ip.get("prefix") or ip.get("netmask") or "24"
        iface = ipaddress.ip_interface(f"{ip.get('address')}/{mask}")
        rng = ip.find("dhcp/range")
        hosts = tuple(
            DhcpHost(mac=(h.get("mac") or "").lower(), ip=h.get("ip") or "", hostname=h.get("name"))
            for h in ip.findall("dhcp/host")
        )
        return IPv4Spec(
            cidr=str(iface.network),
            gateway=str(iface.ip),
            dhcp_start=rng.get("start") if rng is not None else None,
            dhcp_end=rng.get("end") if rng is not None else None,
            hosts=hosts,
        )
    return None


def diff(desired: NetworkSpec, observed: NetworkSpec) -> list[FieldDiff]:
    """Differences in what the manifest says; a bridge name libvirt generated is not drift."""
    restart = UpdateMode.RESTART
    diffs = [
        *compare("spec.mode", observed.mode, desired.mode, restart),
        *compare("spec.domain", observed.domain, desired.domain, restart),
        *compare("spec.autostart", observed.autostart, desired.autostart, UpdateMode.LIVE),
    ]
    if desired.bridge is not None:
        diffs += compare("spec.bridge", observed.bridge, desired.bridge, restart)
    want, have = desired.ipv4, observed.ipv4
    if (want is None) != (have is None):
        diffs.append(FieldDiff("spec.ipv4", _ipv4_text(have), _ipv4_text(want), restart))
    elif want is not None and have is not None:
        diffs += [
            *compare("spec.ipv4.cidr", have.cidr, want.cidr, restart),
            *compare("spec.ipv4.gateway", have.gateway, want.gateway, restart),
            *compare("spec.ipv4.dhcp", _range_text(have), _range_text(want), restart),
            *compare("spec.ipv4.hosts", _hosts_text(have.hosts), _hosts_text(want.hosts), UpdateMode.LIVE),
        ]
    return diffs


def _ipv4_text(ipv4: IPv4Spec | None) -> str | None:
    return None if ipv4 is None else ipv4.cidr


def _range_text(ipv4: IPv4Spec) -> str | None:
    return f"{ipv4.dhcp_start}-{ipv4.dhcp_end}" if ipv4.dhcp_start else None


def _hosts_text(hosts: tuple[DhcpHost, ...]) -> list[str]:
    return sorted(f"{h.mac}={h.ip}" + (f"({h.hostname})" if h.hostname else "") for h in hosts)
