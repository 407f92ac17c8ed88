"""FreeBSD: the socket option numbers and layouts mcastio needs there.

Written from FreeBSD's sources, not run here: every value is from freebsd-src
(github.com/freebsd/freebsd-src), sys/netinet/in.h at
cfae7e4d476ea6d2834f38745ed491d75d9923dc, sys/netinet6/in6.h at
fab4c373af4f465f03ae217f491d8cf3a3eeb26d and sys/sys/socket.h, as each comment
says. These numbers are ABI: FreeBSD keeps them across releases.
"""

from __future__ import annotations

import ipaddress
import struct

from ._layouts import GroupLayout, sockaddr

__all__ = [
    "AF_INET",
    "AF_INET6",
    "GROUP",
    "IN6_PKTINFO_SIZE",
    "IPV6_HOPLIMIT",
    "IPV6_MAX_MEMBERSHIPS",
    "IPV6_PKTINFO",
    "IPV6_RECVHOPLIMIT",
    "IPV6_RECVPKTINFO",
    "IP_MAX_MEMBERSHIPS",
    "IP_MULTICAST_IF",
    "IP_RECVDSTADDR",
    "IP_RECVIF",
    "IP_RECVTTL",
    "MCAST_JOIN_GROUP",
    "MCAST_JOIN_SOURCE_GROUP",
    "MCAST_LEAVE_GROUP",
    "MCAST_LEAVE_SOURCE_GROUP",
    "group_sockaddr",
]

# sys/sys/socket.h: "#define AF_INET 2", "#define AF_INET6 28 /* IPv6 */".
AF_INET = 2
AF_INET6 = 28

# sys/netinet/in.h, options at the IPPROTO_IP level. FreeBSD has no IP_PKTINFO:
# the arrival interface comes with IP_RECVIF (a sockaddr_dl control message) and
# the destination with IP_RECVDSTADDR.
IP_RECVDSTADDR = 7  # bool; "receive IP dst addr w/dgram"
IP_MULTICAST_IF = 9  # "struct in_addr *or* struct ip_mreqn": by index with ip_mreqn
IP_RECVIF = 20  # bool; "receive reception if w/dgram"
IP_RECVTTL = 65  # bool; "receive IP TTL w/dgram" (macOS: 24)
MCAST_JOIN_GROUP = 80  # struct group_req (RFC 3678)
MCAST_LEAVE_GROUP = 81
MCAST_JOIN_SOURCE_GROUP = 82  # struct group_source_req
MCAST_LEAVE_SOURCE_GROUP = 83
# sys/netinet/in.h: "#define IP_MAX_MEMBERSHIPS 4095", each socket's vector
# "dynamically allocated at run-time".
IP_MAX_MEMBERSHIPS = 4095

# sys/netinet6/in6.h (RFC 3542 numbers; macOS differs for IPV6_RECVPKTINFO).
IPV6_RECVPKTINFO = 36  # bool; "recv if, dst addr"
IPV6_RECVHOPLIMIT = 37
IPV6_PKTINFO = 46  # struct in6_pktinfo
IPV6_HOPLIMIT = 47
IPV6_MAX_MEMBERSHIPS = 4095

# sys/netinet6/in6.h: struct in6_pktinfo { struct in6_addr ipi6_addr; unsigned int
# ipi6_ifindex; }.
IN6_PKTINFO_SIZE = 20

# sys/netinet/in.h: struct group_req { uint32_t gr_interface; struct
# sockaddr_storage gr_group; }, no packing pragma, and sockaddr_storage holds an
# __int64_t (_SS_ALIGNSIZE, sys/sys/_sockaddr_storage.h): the group at offset 8
# on 64-bit builds (amd64, arm64), 4 on i386 where int64 aligns to 4.
GROUP = GroupLayout(offset=struct.calcsize("P"))


def group_sockaddr(address: ipaddress.IPv4Address | ipaddress.IPv6Address, scope: int = 0) -> bytes:
    """The group as ``gr_group`` wants it: sin_len, AF_INET/AF_INET6 (28), port 0.

    FreeBSD's in_mcast.c refuses a join whose ``sin_len`` is not the size of the
    address structure, so the length byte is filled in.
    """
    family = AF_INET if address.version == 4 else AF_INET6
    return sockaddr(family, address, 0, scope, length_byte=True)
