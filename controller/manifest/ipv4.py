"""Stage 3 helper: one network's IPv4 address plan, checked and normalised (RELIABILITY B12).

Called by `build` for a Network document the schema accepted (so every address
parses). Checks what the schema cannot: that the gateway, the DHCP range and the
static reservations lie inside the subnet and do not collide. Overlaps *between*
networks are `crosscheck`'s business.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from controller.errors import Problem
from controller.manifest.located import Document, JsonPath
from controller.model import DhcpHost, IPv4Spec

BASE: JsonPath = ("spec", "ipv4")
MAX_PREFIX = 30          # a /31 or /32 leaves no address for guests next to the gateway


@dataclass
class _Subnet:
    """The subnet being checked, and the findings so far."""

    doc: Document
    network: ipaddress.IPv4Network
    problems: list[Problem] = field(default_factory=list)

    def fail(self, path: JsonPath, message: str) -> None:
        self.problems.append(self.doc.problem(path, message))

    def host_address(self, path: JsonPath, text: str) -> ipaddress.IPv4Address | None:
        """The address at `path` if it is a usable host address of the subnet, else a finding."""
        address = ipaddress.IPv4Address(text)
        if address not in self.network:
            self.fail(path, f"{address} is outside {self.network}")
        elif address == self.network.network_address:
            self.fail(path, f"{address} is the network address of {self.network}")
        elif address == self.network.broadcast_address:
            self.fail(path, f"{address} is the broadcast address of {self.network}")
        else:
            return address
        return None


def build_ipv4(doc: Document, value: Mapping[str, Any]) -> tuple[IPv4Spec | None, list[Problem]]:
    """The IPv4Spec (gateway filled in, MACs lower case), or None with the findings."""
    subnet = _Subnet(doc, ipaddress.IPv4Network(value["cidr"], strict=True))
    if subnet.network.prefixlen > MAX_PREFIX:
        subnet.fail(BASE + ("cidr",), f"{subnet.network} leaves no addresses for guests; "
                                      f"use a prefix of /{MAX_PREFIX} or shorter")
        return None, subnet.problems
    gateway = subnet.network.network_address + 1
    if "gateway" in value:
        gateway = subnet.host_address(BASE + ("gateway",), value["gateway"]) or gateway
    dhcp = value.get("dhcp")
    if dhcp is not None:
        start = subnet.host_address(BASE + ("dhcp", "start"), dhcp["start"])
        end = subnet.host_address(BASE + ("dhcp", "end"), dhcp["end"])
        if start and end and start > end:
            subnet.fail(BASE + ("dhcp", "end"), f"{end} is before the range start {start}")
    hosts = _hosts(subnet, value.get("hosts", []), gateway)
    if subnet.problems:
        return None, subnet.problems
    return IPv4Spec(
        cidr=str(subnet.network),
        gateway=str(gateway),
        dhcp_start=str(ipaddress.IPv4Address(dhcp["start"])) if dhcp else None,
        dhcp_end=str(ipaddress.IPv4Address(dhcp["end"])) if dhcp else None,
        hosts=hosts,
    ), []


def _hosts(subnet: _Subnet, entries: list[Mapping[str, Any]],
           gateway: ipaddress.IPv4Address) -> tuple[DhcpHost, ...]:
    """Static reservations: inside the subnet, not the gateway, no IP or MAC twice."""
    hosts = []
    seen_ip: dict[ipaddress.IPv4Address, int] = {}
    seen_mac: dict[str, int] = {}
    for index, entry in enumerate(entries):
        path = BASE + ("hosts", index)
        ip = subnet.host_address(path + ("ip",), entry["ip"]) or ipaddress.IPv4Address(entry["ip"])
        mac = entry["mac"].lower()
        if ip == gateway:
            subnet.fail(path + ("ip",), f"{ip} is the gateway address")
        if ip in seen_ip:
            subnet.fail(path + ("ip",), f"{ip} is already reserved by {_entry(subnet.doc, seen_ip[ip], 'ip')}")
        if mac in seen_mac:
            subnet.fail(path + ("mac",), f"{mac} is already reserved by {_entry(subnet.doc, seen_mac[mac], 'mac')}")
        seen_ip.setdefault(ip, index)
        seen_mac.setdefault(mac, index)
        hosts.append(DhcpHost(mac=mac, ip=str(ip), hostname=entry.get("hostname")))
    return tuple(hosts)


def _entry(doc: Document, index: int, key: str) -> str:
    return f"hosts[{index}] (line {doc.line_of(BASE + ('hosts', index, key))})"
