"""The control messages that come with a received datagram: what each one says.

Pure parsing of ``recvmsg`` ancillary data (the ``recvmmsg`` drains parse theirs in
:mod:`.mmsg` and C); the option numbers are :mod:`mcastio._net`'s.
"""

from __future__ import annotations

import socket
import struct
import sys

from ..._net import IP_PKTINFO, IP_TTL, IPV6_HOPLIMIT, IPV6_PKTINFO
from . import SO_RXQ_OVFL

__all__ = ["IN6_PKTINFO", "IN_PKTINFO", "is_pktinfo", "parse_extras", "parse_pktinfo"]

# struct in_pktinfo { int ifindex; in_addr spec_dst; in_addr addr; }
IN_PKTINFO = struct.Struct("=i4s4s")
# struct in6_pktinfo { in6_addr addr; unsigned int ifindex; }
IN6_PKTINFO = struct.Struct("=16sI")


def is_pktinfo(level: int, kind: int) -> bool:
    return (level == socket.IPPROTO_IP and kind == IP_PKTINFO) or (
        level == socket.IPPROTO_IPV6 and kind == IPV6_PKTINFO
    )


def parse_extras(ancdata: list[tuple[int, int, bytes]]) -> tuple[int | None, int | None]:
    """(TTL or hop limit, the socket's running drop count) where the datagram carries them."""
    ttl: int | None = None
    drops: int | None = None
    for level, kind, data in ancdata:
        if (level == socket.IPPROTO_IP and kind == IP_TTL) or (
            level == socket.IPPROTO_IPV6 and kind == IPV6_HOPLIMIT
        ):
            ttl = int.from_bytes(data[:4], sys.byteorder)
        elif level == socket.SOL_SOCKET and kind == SO_RXQ_OVFL:
            drops = int.from_bytes(data[:4], sys.byteorder)
    return ttl, drops


def parse_pktinfo(ancdata: list[tuple[int, int, bytes]]) -> tuple[int, str] | None:
    """(arrival ifindex, destination address) from IP_PKTINFO or IPV6_PKTINFO."""
    for level, kind, data in ancdata:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(data) >= IN_PKTINFO.size:
            ifindex, _spec, dst = IN_PKTINFO.unpack_from(data)
            return ifindex, socket.inet_ntop(socket.AF_INET, dst)
        if level == socket.IPPROTO_IPV6 and kind == IPV6_PKTINFO and len(data) >= IN6_PKTINFO.size:
            dst6, ifindex6 = IN6_PKTINFO.unpack_from(data)
            return ifindex6, socket.inet_ntop(socket.AF_INET6, dst6)
    return None
