"""IGMP and MLD messages: queries and reports parsed from and built into bytes. Pure.

Parsing serves ``doctor``, the membership keeper and the querier (which queries
were heard); building serves the keeper's reports and the backup querier's
general queries. Checksums of IGMP are computed here; the
kernel fills in the ICMPv6 checksum of MLD on raw sockets.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "IGMPV3_REPORTS",
    "MLDV2_REPORTS",
    "NOT_A_QUERY",
    "IPAddress",
    "QueryCheck",
    "QuerySeen",
    "check_igmp",
    "check_mld",
    "check_mld_packet",
    "check_query",
    "encode_interval",
    "has_router_alert",
    "igmp_query",
    "igmp_report",
    "igmpv3_report",
    "mld_query",
    "mld_report",
    "mldv2_report",
    "parse_igmp_query",
    "parse_mld_message",
    "parse_mld_query",
    "parse_query",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Where IGMPv3 and MLDv2 reports go (RFC 3376 §4.2.14, RFC 3810 §5.2.14).
IGMPV3_REPORTS = ipaddress.IPv4Address("224.0.0.22")
MLDV2_REPORTS = ipaddress.IPv6Address("ff02::16")

_IGMP_QUERY, _IGMPV2_REPORT, _IGMPV3_REPORT = 0x11, 0x16, 0x22
_MLD_QUERY, _MLDV1_REPORT, _MLDV2_REPORT = 130, 131, 143
# Current-state group record types (RFC 3376 §4.2.12; the same in RFC 3810 §5.2.12).
_IS_IN, _IS_EX = 1, 2


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

    @property
    def general(self) -> bool:
        return int(self.group) == 0


def _ip_payload_v4(packet: bytes) -> tuple[bytes, IPAddress] | None:
    if len(packet) < 20 or packet[0] >> 4 != 4 or packet[9] != 2:
        return None
    ihl = (packet[0] & 0x0F) * 4
    return packet[ihl:], ipaddress.IPv4Address(packet[12:16])


# IPv6 extension headers that may sit between the fixed header and ICMPv6:
# hop-by-hop (0), routing (43), destination options (60).
_V6_EXT = (0, 43, 60)
_ICMPV6 = 58


def _icmp6_payload(packet: bytes) -> tuple[bytes, IPAddress] | None:
    if len(packet) < 40 or packet[0] >> 4 != 6:
        return None
    next_header, offset = packet[6], 40
    while next_header in _V6_EXT and len(packet) >= offset + 2:
        next_header, offset = packet[offset], offset + (packet[offset + 1] + 1) * 8
    if next_header != _ICMPV6:
        return None
    return packet[offset:], ipaddress.IPv6Address(packet[8:24])


def parse_igmp_query(interface: str, packet: bytes) -> QuerySeen | None:
    """An IGMP query from a raw IPv4 packet, or ``None`` for anything else."""
    found = _ip_payload_v4(packet)
    if found is None:
        return None
    igmp, source = found
    if len(igmp) < 8 or igmp[0] != _IGMP_QUERY:
        return None
    if len(igmp) >= 12:
        version = 3
    elif igmp[1] == 0:
        version = 1
    else:
        version = 2
    return QuerySeen(interface, source, version, ipaddress.IPv4Address(igmp[4:8]))


def parse_mld_query(interface: str, packet: bytes) -> QuerySeen | None:
    """An MLD query from a raw IPv6 packet, or ``None`` for anything else."""
    found = _icmp6_payload(packet)
    if found is None:
        return None
    icmp, source = found
    return parse_mld_message(interface, source, icmp)


def parse_mld_message(interface: str, source: IPAddress, icmp: bytes) -> QuerySeen | None:
    """An MLD query from a bare ICMPv6 message (as a raw ICMPv6 socket reads it)."""
    if len(icmp) < 24 or icmp[0] != _MLD_QUERY:
        return None
    version = 2 if len(icmp) >= 28 else 1
    return QuerySeen(interface, source, version, ipaddress.IPv6Address(icmp[8:24]))


def parse_query(interface: str, packet: bytes) -> QuerySeen | None:
    """An IGMP or MLD query from a raw IP packet of either family."""
    if packet and packet[0] >> 4 == 6:
        return parse_mld_query(interface, packet)
    return parse_igmp_query(interface, packet)


# -- validation: what the kernel (and RFC 3376 / 3810) accepts as a query ------------
#
# A raw socket gets IGMP before igmp_rcv() checks it, and a packet socket gets
# everything on the wire, so the keeper and the querier must judge a query the way
# the host does, or one bad packet per interval from any device on the link switches
# them off.

#: (the query, "") when it is valid; (None, why) when a query is discarded;
#: :data:`NOT_A_QUERY` for anything that is no membership query at all.
QueryCheck = tuple[QuerySeen | None, str]
NOT_A_QUERY: QueryCheck = (None, "")


def _multicast_or_zero(group: IPAddress) -> bool:
    return int(group) == 0 or group.is_multicast


def check_igmp(interface: str, packet: bytes) -> QueryCheck:
    """Judge an IGMP query from a raw IPv4 packet (from its IP header) as a host does.

    Discarded: TTL other than 1 (RFC 3376 §4: queries are link-local, sent with TTL
    1), a bad checksum, a length that is neither 8 nor 12 and more (igmp_heard_query
    ignores 9-11), a source list longer than the message, a group that is neither
    0.0.0.0 nor multicast, and an IGMPv3 general query that lists sources (§4.1.9,
    which the kernel ignores too). Router Alert is not required: RFC 2236 and 3376
    hosts and the kernel accept queries without it, and IGMPv1 queriers never sent it.
    """
    if len(packet) < 20 or packet[0] >> 4 != 4 or packet[9] != 2:
        return NOT_A_QUERY
    ihl = (packet[0] & 0x0F) * 4
    total = int.from_bytes(packet[2:4], "big")
    if ihl < 20 or len(packet) < ihl + 1:
        return NOT_A_QUERY
    # A raw socket's packet is trimmed to the total length already; a packet socket's may be padded.
    igmp = packet[ihl:total] if ihl <= total <= len(packet) else packet[ihl:]
    if not igmp or igmp[0] != _IGMP_QUERY:
        return NOT_A_QUERY
    source = ipaddress.IPv4Address(packet[12:16])
    if packet[8] != 1:
        return None, f"TTL {packet[8]}, not 1"
    if len(igmp) < 8 or 8 < len(igmp) < 12:
        return None, f"length {len(igmp)}"
    if _checksum(igmp) != 0:
        return None, "bad checksum"
    group = ipaddress.IPv4Address(igmp[4:8])
    if not _multicast_or_zero(group):
        return None, f"group {group} is not multicast"
    if len(igmp) >= 12:
        sources = int.from_bytes(igmp[10:12], "big")
        if len(igmp) < 12 + 4 * sources:
            return None, "source list past the end"
        if sources and int(group) == 0:
            return None, "general query with sources"
        version = 3
    else:
        version = 1 if igmp[1] == 0 else 2
    return QuerySeen(interface, source, version, group), ""


def has_router_alert(hopopts: bytes) -> bool:
    """Whether a hop-by-hop options header carries Router Alert (RFC 2711, value 0: MLD)."""
    if len(hopopts) < 2:
        return False
    end = min(len(hopopts), (hopopts[1] + 1) * 8)
    i = 2
    while i < end:
        kind = hopopts[i]
        if kind == 0:  # Pad1
            i += 1
            continue
        if i + 1 >= end:
            return False
        size = hopopts[i + 1]
        if kind == 5 and size == 2 and i + 4 <= end:
            return hopopts[i + 2 : i + 4] == b"\0\0"
        i += 2 + size
    return False


def check_mld(
    interface: str,
    source: IPAddress,
    icmp: bytes,
    *,
    hop_limit: int | None,
    router_alert: bool,
    destination: ipaddress.IPv6Address | None = None,
) -> QueryCheck:
    """Judge a bare MLD message as RFC 3810 §6.2 / §5.1.14 tell a node to.

    Discarded: a source that is not link-local (``::`` included), a hop limit other
    than 1, no Router Alert, a length that is neither 24 nor 28 and more, a source
    list past the end, a group neither ``::`` nor multicast, an MLDv2 general query
    with sources. With ``destination`` (a packet socket's view) the ICMPv6 checksum
    is checked too; a raw ICMPv6 socket gets only messages whose checksum the kernel
    verified. ``hop_limit`` None means unknown (not checked).
    """
    if len(icmp) < 1 or icmp[0] != _MLD_QUERY:
        return NOT_A_QUERY
    if not isinstance(source, ipaddress.IPv6Address) or not source.is_link_local:
        return None, f"source {source} is not link-local"
    if hop_limit is not None and hop_limit != 1:
        return None, f"hop limit {hop_limit}, not 1"
    if not router_alert:
        return None, "no Router Alert"
    if len(icmp) < 24 or 24 < len(icmp) < 28:
        return None, f"length {len(icmp)}"
    if destination is not None and _checksum(_pseudo_header(source, destination, icmp) + icmp):
        return None, "bad checksum"
    group = ipaddress.IPv6Address(icmp[8:24])
    if not _multicast_or_zero(group):
        return None, f"group {group} is not multicast"
    version = 1
    if len(icmp) >= 28:
        sources = int.from_bytes(icmp[26:28], "big")
        if len(icmp) < 28 + 16 * sources:
            return None, "source list past the end"
        if sources and int(group) == 0:
            return None, "general query with sources"
        version = 2
    return QuerySeen(interface, source, version, group), ""


def _pseudo_header(source: IPAddress, destination: ipaddress.IPv6Address, icmp: bytes) -> bytes:
    return source.packed + destination.packed + struct.pack("!I3xB", len(icmp), _ICMPV6)


def check_mld_packet(interface: str, packet: bytes) -> QueryCheck:
    """Judge an MLD query from a whole IPv6 packet (a packet socket's view)."""
    if len(packet) < 40 or packet[0] >> 4 != 6:
        return NOT_A_QUERY
    payload_end = min(len(packet), 40 + int.from_bytes(packet[4:6], "big"))
    next_header, offset, router_alert = packet[6], 40, False
    while next_header in _V6_EXT and payload_end >= offset + 2:
        size = (packet[offset + 1] + 1) * 8
        if next_header == 0:
            router_alert = router_alert or has_router_alert(packet[offset : offset + size])
        next_header, offset = packet[offset], offset + size
    if next_header != _ICMPV6 or offset >= payload_end:
        return NOT_A_QUERY
    return check_mld(
        interface,
        ipaddress.IPv6Address(packet[8:24]),
        packet[offset:payload_end],
        hop_limit=packet[7],
        router_alert=router_alert,
        destination=ipaddress.IPv6Address(packet[24:40]),
    )


def check_query(interface: str, packet: bytes) -> QueryCheck:
    """Judge an IGMP or MLD query from a raw IP packet of either family."""
    if packet and packet[0] >> 4 == 6:
        return check_mld_packet(interface, packet)
    return check_igmp(interface, packet)


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF


def _with_checksum(message: bytes) -> bytes:
    return message[:2] + struct.pack("!H", _checksum(message)) + message[4:]


def encode_interval(value: int) -> int:
    """RFC 3376 §4.1.1 / §4.1.7 code for a Max Resp or QQIC value (in its units)."""
    if value < 128:
        return value
    # Floating point: 1|exp(3)|mant(4), value = (mant | 0x10) << (exp + 3).
    for exp in range(8):
        mant = (value >> (exp + 3)) - 0x10
        if 0 <= mant <= 0x0F:
            return 0x80 | exp << 4 | mant
    return 0xFF


def igmp_report(
    version: int, group: ipaddress.IPv4Address, sources: Sequence[ipaddress.IPv4Address] = ()
) -> tuple[bytes, ipaddress.IPv4Address]:
    """A current-state report for ``group`` and where to send it.

    Version 3 says MODE_IS_EXCLUDE {} for any source, or MODE_IS_INCLUDE
    ``sources`` for a source-specific membership: what the kernel itself answers
    to a query, so it refreshes a snooping switch and never leaves anything.
    """
    if version < 3:
        return _with_checksum(struct.pack("!BBH4s", _IGMPV2_REPORT, 0, 0, group.packed)), group
    return igmpv3_report([(group, tuple(sources))]), IGMPV3_REPORTS


def igmpv3_report(
    records: Sequence[tuple[ipaddress.IPv4Address, Sequence[ipaddress.IPv4Address]]],
) -> bytes:
    """One IGMPv3 report (to :data:`IGMPV3_REPORTS`) of current-state records.

    A record with sources is MODE_IS_INCLUDE them, one without MODE_IS_EXCLUDE {}.
    Fitting the link's MTU is the caller's (see :mod:`._reportplan`).
    """
    body = b"".join(_record(group, sources) for group, sources in records)
    return _with_checksum(struct.pack("!BBHHH", _IGMPV3_REPORT, 0, 0, 0, len(records)) + body)


def mldv2_report(
    records: Sequence[tuple[ipaddress.IPv6Address, Sequence[ipaddress.IPv6Address]]],
) -> bytes:
    """The MLDv2 counterpart of :func:`igmpv3_report` (checksum left to the kernel)."""
    body = b"".join(_record(group, sources) for group, sources in records)
    return struct.pack("!BBHHH", _MLDV2_REPORT, 0, 0, 0, len(records)) + body


def _record(group: IPAddress, sources: Sequence[IPAddress]) -> bytes:
    # The record layout is the same in both (RFC 3376 §4.2.4, RFC 3810 §5.2.4).
    kind = _IS_IN if sources else _IS_EX
    head = struct.pack("!BBH", kind, 0, len(sources)) + group.packed
    return head + b"".join(s.packed for s in sources)


def mld_report(
    version: int, group: ipaddress.IPv6Address, sources: Sequence[ipaddress.IPv6Address] = ()
) -> tuple[bytes, ipaddress.IPv6Address]:
    """The MLD counterpart of :func:`igmp_report` (checksum left to the kernel)."""
    if version < 2:
        return struct.pack("!BBHHH16s", _MLDV1_REPORT, 0, 0, 0, 0, group.packed), group
    return mldv2_report([(group, tuple(sources))]), MLDV2_REPORTS


def igmp_query(version: int, interval: float, response: float, robustness: int = 2) -> bytes:
    """A general query (to 224.0.0.1); times in seconds, Max Resp in tenths."""
    tenths = max(1, round(response * 10))
    if version < 3:
        return _with_checksum(struct.pack("!BBH4s", _IGMP_QUERY, min(tenths, 255), 0, bytes(4)))
    qqic = encode_interval(max(1, round(interval)))
    message = struct.pack(
        "!BBH4sBBH", _IGMP_QUERY, encode_interval(tenths), 0, bytes(4), robustness & 7, qqic, 0
    )
    return _with_checksum(message)


def mld_query(version: int, interval: float, response: float, robustness: int = 2) -> bytes:
    """A general query (to ff02::1); Max Response Delay in milliseconds."""
    millis = max(1, round(response * 1000))
    if version < 2:
        return struct.pack("!BBHHH16s", _MLD_QUERY, 0, 0, min(millis, 0xFFFF), 0, bytes(16))
    # RFC 3810 §5.1.3: a code of 32768 or more is floating point, like IGMPv3's.
    code = millis if millis < 32768 else _mld_float(millis)
    qqic = encode_interval(max(1, round(interval)))
    return struct.pack(
        "!BBHHH16sBBH", _MLD_QUERY, 0, 0, code, 0, bytes(16), robustness & 7, qqic, 0
    )


def _mld_float(value: int) -> int:
    for exp in range(8):
        mant = (value >> (exp + 3)) - 0x1000
        if 0 <= mant <= 0x0FFF:
            return 0x8000 | exp << 12 | mant
    return 0xFFFF
