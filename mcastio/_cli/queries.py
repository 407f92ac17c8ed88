"""IGMP and MLD membership queries parsed from raw packets: pure, no sockets."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

__all__ = ["IPAddress", "QuerySeen", "parse_igmp_query", "parse_mld_query", "parse_query"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class QuerySeen:
    """One IGMP or MLD membership query captured on an interface."""

    interface: str
    source: IPAddress
    #: IGMP 1, 2 or 3 (RFC 3376 §7.1 tells them apart by length and Max Resp
    #: Code); MLD 1 or 2 (RFC 3810 §8.1: by length).
    version: int
    #: 0.0.0.0 or :: for a general query.
    group: IPAddress

    @property
    def protocol(self) -> str:
        return "IGMP" if self.source.version == 4 else "MLD"


def parse_igmp_query(interface: str, packet: bytes) -> QuerySeen | None:
    """An IGMP query from a raw IPv4 packet, or ``None`` for anything else."""
    if len(packet) < 20 or packet[0] >> 4 != 4 or packet[9] != 2:
        return None
    ihl = (packet[0] & 0x0F) * 4
    igmp = packet[ihl:]
    if len(igmp) < 8 or igmp[0] != 0x11:
        return None
    if len(igmp) >= 12:
        version = 3
    elif igmp[1] == 0:
        version = 1
    else:
        version = 2
    source = ipaddress.IPv4Address(packet[12:16])
    return QuerySeen(interface, source, version, ipaddress.IPv4Address(igmp[4:8]))


# IPv6 extension headers that may sit between the fixed header and ICMPv6:
# hop-by-hop (0), routing (43), destination options (60).
_V6_EXT = (0, 43, 60)
_ICMPV6 = 58
_MLD_QUERY = 130


def parse_mld_query(interface: str, packet: bytes) -> QuerySeen | None:
    """An MLD query from a raw IPv6 packet, or ``None`` for anything else."""
    if len(packet) < 40 or packet[0] >> 4 != 6:
        return None
    next_header, offset = packet[6], 40
    while next_header in _V6_EXT and len(packet) >= offset + 2:
        next_header, offset = packet[offset], offset + (packet[offset + 1] + 1) * 8
    icmp = packet[offset:]
    if next_header != _ICMPV6 or len(icmp) < 24 or icmp[0] != _MLD_QUERY:
        return None
    source = ipaddress.IPv6Address(packet[8:24])
    version = 2 if len(icmp) >= 28 else 1
    return QuerySeen(interface, source, version, ipaddress.IPv6Address(icmp[8:24]))


def parse_query(interface: str, packet: bytes) -> QuerySeen | None:
    """An IGMP or MLD query from a raw IP packet of either family."""
    if packet and packet[0] >> 4 == 6:
        return parse_mld_query(interface, packet)
    return parse_igmp_query(interface, packet)
