"""macOS: the socket option numbers and layouts mcastio needs there.

Written from Apple's sources, not run here: every value is from xnu
(github.com/apple-oss-distributions/xnu at 5c2921b07a2480ab43ec66f5b9e41cb872bc554f),
in the header each comment names. CPython's socket module lacks several of them
(IP_RECVIF, IP_MULTICAST_IFINDEX, the MCAST_* joins), so they are written in.
"""

from __future__ import annotations

import ipaddress

from ._layouts import GroupLayout, sockaddr

__all__ = [
    "AF_INET",
    "AF_INET6",
    "EHOSTUNREACH",
    "ETOOMANYREFS",
    "GROUP",
    "IN6_PKTINFO_SIZE",
    "IN_PKTINFO_SIZE",
    "IPV6_HOPLIMIT",
    "IPV6_MAX_MEMBERSHIPS",
    "IPV6_PKTINFO",
    "IPV6_RECVHOPLIMIT",
    "IPV6_RECVPKTINFO",
    "IP_BOUND_IF",
    "IP_MAX_MEMBERSHIPS",
    "IP_MULTICAST_IFINDEX",
    "IP_PKTINFO",
    "IP_RECVIF",
    "IP_RECVTTL",
    "LOCAL_NETWORK_PRIVACY_SINCE",
    "MCAST_JOIN_GROUP",
    "MCAST_JOIN_SOURCE_GROUP",
    "MCAST_LEAVE_GROUP",
    "MCAST_LEAVE_SOURCE_GROUP",
    "group_sockaddr",
]

# bsd/sys/socket.h: "#define AF_INET 2", "#define AF_INET6 30 /* IPv6 */".
AF_INET = 2
AF_INET6 = 30

# bsd/netinet/in.h, options at the IPPROTO_IP level.
IP_RECVIF = 20  # bool; the arrival interface as a sockaddr_dl control message
IP_RECVTTL = 24  # bool; the TTL as a control message
IP_BOUND_IF = 25  # int; the interface index a socket sends and receives by
IP_PKTINFO = 26  # == IP_RECVPKTINFO: struct in_pktinfo on receive
IP_MULTICAST_IFINDEX = 66  # int; the interface index multicast leaves by
MCAST_JOIN_GROUP = 80  # struct group_req (RFC 3678)
MCAST_LEAVE_GROUP = 81
MCAST_JOIN_SOURCE_GROUP = 82  # struct group_source_req
MCAST_LEAVE_SOURCE_GROUP = 83
# bsd/netinet/in.h: "#define IP_MAX_MEMBERSHIPS 4095", the vector of each socket
# "dynamically allocated at run-time": no 20-group limit as on Linux.
IP_MAX_MEMBERSHIPS = 4095

# bsd/sys/errno.h (xnu at e3723e1f17661b24996789d8afc084c0c3303b26):
# "#define EHOSTUNREACH 65 /* No route to host */" (Linux: 113), what a send
# refused by Local Network Privacy fails with; "#define ETOOMANYREFS 59", what the
# join past IP_MAX_MEMBERSHIPS fails with: imo_grow() in bsd/netinet/in_mcast.c
# doubles the vector (31, 63, ... 4095) and refuses "newmax > IP_MAX_MEMBERSHIPS"
# with ETOOMANYREFS (Linux refuses its limit with ENOBUFS). IPv6 alike
# (in6_mcast.c, IPV6_MAX_MEMBERSHIPS).
EHOSTUNREACH = 65
ETOOMANYREFS = 59

# Apple TN3179 "Understanding local network privacy": "macOS | yes | macOS 15".
LOCAL_NETWORK_PRIVACY_SINCE = 15

# bsd/netinet6/in6.h: the RFC 3542 names (declared under __APPLE_USE_RFC_3542).
# Apple's IPV6_RECVPKTINFO is 61, not
# FreeBSD's 36, "to avoid collision with ... IPV6_TCLASS in previous darwin".
IPV6_RECVHOPLIMIT = 37
IPV6_PKTINFO = 46
IPV6_HOPLIMIT = 47
IPV6_RECVPKTINFO = 61
IPV6_MAX_MEMBERSHIPS = 4095  # bsd/netinet6/in6.h, as for IPv4

# bsd/netinet/in.h: struct in_pktinfo { unsigned int ipi_ifindex; struct in_addr
# ipi_spec_dst; struct in_addr ipi_addr; }, the Linux layout.
IN_PKTINFO_SIZE = 12
# bsd/netinet6/in6.h: struct in6_pktinfo { struct in6_addr ipi6_addr; unsigned int
# ipi6_ifindex; }.
IN6_PKTINFO_SIZE = 20

# bsd/netinet/in.h declares group_req and group_source_req between "#pragma pack(4)"
# and "#pragma pack()": gr_group starts at offset 4, where Linux and FreeBSD
# (64-bit) align sockaddr_storage to 8: a join packed as on Linux is 4 bytes off.
GROUP = GroupLayout(offset=4)


def group_sockaddr(address: ipaddress.IPv4Address | ipaddress.IPv6Address, scope: int = 0) -> bytes:
    """The group as ``gr_group`` wants it: sin_len, AF_INET/AF_INET6 (30), port 0."""
    family = AF_INET if address.version == 4 else AF_INET6
    return sockaddr(family, address, 0, scope, length_byte=True)
