"""Facts about a multicast group: its scope, its Ethernet MAC and who shares it. Pure."""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from .._model import Group

__all__ = [
    "MacCollision",
    "ethernet_mac",
    "mac_collisions",
    "mac_siblings",
    "scope_summary",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def ethernet_mac(address: IPAddress) -> str:
    """The destination MAC a group maps to (RFC 1112 §6.4, RFC 2464 §7)."""
    if isinstance(address, ipaddress.IPv4Address):
        # 01:00:5e followed by the low 23 bits of the group; 5 bits are thrown away.
        low = int(address) & 0x7FFFFF
        octets = (0x01, 0x00, 0x5E, low >> 16, (low >> 8) & 0xFF, low & 0xFF)
    else:
        octets = (0x33, 0x33, *address.packed[-4:])
    return ":".join(f"{o:02x}" for o in octets)


def mac_siblings(address: ipaddress.IPv4Address) -> tuple[ipaddress.IPv4Address, ...]:
    """The 31 other IPv4 groups that map to the same Ethernet MAC as ``address``."""
    low = int(address) & 0x7FFFFF
    return tuple(
        ipaddress.IPv4Address(0xE0000000 | (high << 23) | low)
        for high in range(32)
        if 0xE0000000 | (high << 23) | low != int(address)
    )


_SCOPE_TEXT = {
    "link-local": "link-local: never forwarded by routers, stays on each link",
    "administrative": (
        "administratively scoped (RFC 2365): private to your organisation, like RFC 1918 unicast"
    ),
    "source-specific": (
        "source-specific (SSM, RFC 4607): receivers must join with a source; needs IGMPv3/MLDv2"
    ),
    "global": "globally scoped: routable beyond your network if routers let it",
    "interface-local": "interface-local: never leaves the host",
    "realm-local": "realm-local (IPv6 scope 3)",
    "admin-local": "admin-local (IPv6 scope 4): the smallest administratively configured scope",
    "site-local": "site-local (IPv6 scope 5): one site",
    "organization-local": "organization-local (IPv6 scope 8): several sites of one organisation",
}


def scope_summary(group: Group) -> str:
    """One sentence on where packets to ``group`` may travel."""
    text = _SCOPE_TEXT.get(group.scope, f"scope {group.scope}")
    if group.family.name == "AF_INET6":
        text += f" (IPv6 scope field {group.address.packed[1] & 0x0F:x})"
    return text


@dataclass(frozen=True, slots=True)
class MacCollision:
    """Several groups in use on one interface that share one Ethernet MAC."""

    interface: str
    mac: str
    groups: tuple[IPAddress, ...]


def mac_collisions(memberships: Iterable[tuple[str, IPAddress]]) -> tuple[MacCollision, ...]:
    """Groups joined on the same interface whose MACs collide.

    The NIC's hardware filter and every snooping switch see them as one group, so a
    host receives (and must discard in software) the other group's traffic too.
    """
    by_mac: dict[tuple[str, str], set[IPAddress]] = defaultdict(set)
    for interface, group in memberships:
        by_mac[(interface, ethernet_mac(group))].add(group)
    return tuple(
        MacCollision(interface, mac, tuple(sorted(groups, key=int)))
        for (interface, mac), groups in sorted(by_mac.items())
        if len(groups) > 1
    )
