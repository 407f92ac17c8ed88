"""Windows: the socket option numbers and layouts mcastio needs there.

Written from the Windows SDK headers, not run here: every value is from
ws2ipdef.h and ws2def.h as mingw-w64 ships them (mingw-w64-headers/include),
which reproduce the SDK's numbers (TerraFX.Interop's port of the Windows SDK
10.0.22621.0 ws2ipdef.h agrees on MCAST_*). Winsock differs from the BSDs: no
recvmsg in CPython (WSARecvMsg is not exposed, cpython issue 80398), so the
arrival interface comes only from which socket read a datagram, one receive
socket per interface address.
"""

from __future__ import annotations

import ipaddress

from ._layouts import GroupLayout, sockaddr

__all__ = [
    "AF_INET",
    "AF_INET6",
    "GROUP",
    "IPV6_HOPLIMIT",
    "IPV6_PKTINFO",
    "IPV6_UNICAST_IF",
    "IP_ADD_SOURCE_MEMBERSHIP",
    "IP_MULTICAST_IF",
    "IP_PKTINFO",
    "IP_RECVTTL",
    "IP_UNICAST_IF",
    "MCAST_JOIN_GROUP",
    "MCAST_JOIN_SOURCE_GROUP",
    "MCAST_LEAVE_GROUP",
    "MCAST_LEAVE_SOURCE_GROUP",
    "group_sockaddr",
]

# ws2def.h: "#define AF_INET 2", "#define AF_INET6 23".
AF_INET = 2
AF_INET6 = 23

# ws2ipdef.h, options at the IPPROTO_IP level. What IP_MULTICAST_IF and
# IP_UNICAST_IF take is from Microsoft's "IPPROTO_IP socket options" page
# (learn.microsoft.com/windows/win32/winsock/ipproto-ip-socket-options).
IP_MULTICAST_IF = 9  # an in_addr, or an interface index in network order
IP_ADD_SOURCE_MEMBERSHIP = 15  # ip_mreq_source: source, then interface (not Linux's order)
IP_PKTINFO = 19  # in_pktinfo, only through WSARecvMsg
IP_RECVTTL = 21  # (the same number as IP_HOPLIMIT)
IP_UNICAST_IF = 31  # the interface index unicast leaves by, in network order
# ws2ipdef.h, options at the IPPROTO_IPV6 level.
IPV6_PKTINFO = 19
IPV6_HOPLIMIT = 21
IPV6_UNICAST_IF = 31
# ws2ipdef.h, "IP agnostic" (RFC 3678) options.
MCAST_JOIN_GROUP = 41  # GROUP_REQ
MCAST_LEAVE_GROUP = 42
MCAST_JOIN_SOURCE_GROUP = 45  # GROUP_SOURCE_REQ
MCAST_LEAVE_SOURCE_GROUP = 46

# ws2ipdef.h: typedef struct group_req { ULONG gr_interface; SOCKADDR_STORAGE
# gr_group; }; SOCKADDR_STORAGE (ws2def.h) holds an __int64, which aligns to 8
# on x86 and x64 alike: the group at offset 8.
GROUP = GroupLayout(offset=8)


def group_sockaddr(address: ipaddress.IPv4Address | ipaddress.IPv6Address, scope: int = 0) -> bytes:
    """The group as ``gr_group`` wants it: a 16-bit family, AF_INET/AF_INET6 (23)."""
    family = AF_INET if address.version == 4 else AF_INET6
    return sockaddr(family, address, 0, scope, length_byte=False)
