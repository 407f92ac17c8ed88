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
    "IPAddress",
    "QuerySeen",
    "encode_interval",
    "igmp_query",
    "igmp_report",
    "mld_query",
    "mld_report",
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
    kind = _IS_IN if sources else _IS_EX
    record = struct.pack("!BBH4s", kind, 0, len(sources), group.packed)
    record += b"".join(s.packed for s in sources)
    message = struct.pack("!BBHHH", _IGMPV3_REPORT, 0, 0, 0, 1) + record
    return _with_checksum(message), IGMPV3_REPORTS


def mld_report(
    version: int, group: ipaddress.IPv6Address, sources: Sequence[ipaddress.IPv6Address] = ()
) -> tuple[bytes, ipaddress.IPv6Address]:
    """The MLD counterpart of :func:`igmp_report` (checksum left to the kernel)."""
    if version < 2:
        return struct.pack("!BBHHH16s", _MLDV1_REPORT, 0, 0, 0, 0, group.packed), group
    kind = _IS_IN if sources else _IS_EX
    record = struct.pack("!BBH16s", kind, 0, len(sources), group.packed)
    record += b"".join(s.packed for s in sources)
    return struct.pack("!BBHHH", _MLDV2_REPORT, 0, 0, 0, 1) + record, MLDV2_REPORTS


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
