"""Linux's option numbers and RFC 3678 join layout; the package of all that knows Linux.

This package holds all that knows it runs on Linux (docs/explanation/design.md's
module map): :mod:`.netlink`, :mod:`.hostdump`, :mod:`.linkfacts`, :mod:`.procnet`,
:mod:`.rawnet`, :mod:`.mmsg` and ``_cdrain``, :mod:`.ancillary`, :mod:`.receiver` (the
Linux profile's receive socket and its joins), :mod:`.snapshot` (the interface
snapshot from the rtnetlink dumps, /proc and /sys).

The Linux profile joins with ``ip_mreqn``/``ipv6_mreq`` (:mod:`.receiver`);
the portable path joins the way every OS here can, with ``MCAST_JOIN_GROUP`` and
a ``group_req``, so that ``MCASTIO_PORTABLE=1`` runs the same code the other
OSes would. Values from the kernel's UAPI headers (include/uapi/linux/in.h and
socket.h, as installed in /usr/include/linux on this machine, kernel 6.18).
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct

from .._layouts import GroupLayout, sockaddr

__all__ = [
    "AF_INET",
    "AF_INET6",
    "GROUP",
    "IPV6_HOPLIMIT",
    "IPV6_MULTICAST_ALL",
    "IPV6_PKTINFO",
    "IPV6_RECVHOPLIMIT",
    "IPV6_RECVPKTINFO",
    "IPV6_TCLASS",
    "IP_MREQN",
    "IP_MULTICAST_ALL",
    "IP_PKTINFO",
    "IP_RECVTTL",
    "IP_TTL",
    "MCAST_BLOCK_SOURCE",
    "MCAST_JOIN_GROUP",
    "MCAST_JOIN_SOURCE_GROUP",
    "MCAST_LEAVE_GROUP",
    "MCAST_LEAVE_SOURCE_GROUP",
    "MCAST_UNBLOCK_SOURCE",
    "SO_MEMINFO",
    "SO_RXQ_OVFL",
    "bind_to_device",
    "group_sockaddr",
    "no_other_groups",
]

# include/linux/socket.h: "#define AF_INET 2", "#define AF_INET6 10".
AF_INET = 2
AF_INET6 = 10

# include/uapi/linux/in.h: "#define MCAST_JOIN_GROUP 42", MCAST_BLOCK_SOURCE 43,
# MCAST_UNBLOCK_SOURCE 44, MCAST_LEAVE_GROUP 45, MCAST_JOIN_SOURCE_GROUP 46,
# MCAST_LEAVE_SOURCE_GROUP 47.
MCAST_JOIN_GROUP = 42
MCAST_BLOCK_SOURCE = 43
MCAST_UNBLOCK_SOURCE = 44
MCAST_LEAVE_GROUP = 45
MCAST_JOIN_SOURCE_GROUP = 46
MCAST_LEAVE_SOURCE_GROUP = 47
# include/uapi/linux/in.h: "#define IP_MULTICAST_ALL 49" (CPython 3.11's socket
# module does not name it).
IP_MULTICAST_ALL = 49
# include/uapi/linux/in6.h: "#define IPV6_MULTICAST_ALL 29".
IPV6_MULTICAST_ALL = 29
# Where CPython's socket module lacks these names (:mod:`mcastio._net` takes its own
# first): include/uapi/linux/in.h "#define IP_TTL 2", "#define IP_PKTINFO 8",
# "#define IP_RECVTTL 12"; include/uapi/linux/in6.h "#define IPV6_RECVPKTINFO 49",
# "#define IPV6_PKTINFO 50", "#define IPV6_RECVHOPLIMIT 51", "#define IPV6_HOPLIMIT
# 52", "#define IPV6_TCLASS 67".
IP_TTL = 2
IP_PKTINFO = 8
IP_RECVTTL = 12
IPV6_RECVPKTINFO = 49
IPV6_PKTINFO = 50
IPV6_RECVHOPLIMIT = 51
IPV6_HOPLIMIT = 52
IPV6_TCLASS = 67
# include/uapi/asm-generic/socket.h: "#define SO_RXQ_OVFL 40", "#define SO_MEMINFO 55".
# Alpha, MIPS, PA-RISC and SPARC number them in their own asm/socket.h: CPython's
# names, where its socket module has them, are that machine's.
SO_RXQ_OVFL = getattr(socket, "SO_RXQ_OVFL", 40)
SO_MEMINFO = getattr(socket, "SO_MEMINFO", 55)

# include/uapi/linux/in.h: struct group_req { __u32 gr_interface; struct
# __kernel_sockaddr_storage gr_group; }, and that storage (uapi/linux/socket.h)
# is a union with "void *__align": the group at the alignment of a pointer.
GROUP = GroupLayout(offset=struct.calcsize("P"))
# include/uapi/linux/in.h: struct ip_mreqn { struct in_addr imr_multiaddr;
# struct in_addr imr_address; int imr_ifindex; }, for the joins and IP_MULTICAST_IF.
IP_MREQN = struct.Struct("=4s4si")


def group_sockaddr(address: ipaddress.IPv4Address | ipaddress.IPv6Address, scope: int = 0) -> bytes:
    """The group as ``gr_group`` wants it: a 16-bit family, AF_INET/AF_INET6 (10)."""
    family = AF_INET if address.version == 4 else AF_INET6
    return sockaddr(family, address, 0, scope, length_byte=False)


def bind_to_device(sock: socket.socket, ifname: str) -> None:
    """SO_BINDTODEVICE: the socket sends and receives on ``ifname`` only.

    Raises the kernel's OSError: EPERM without CAP_NET_RAW before Linux 5.7, ENODEV
    for a name that is gone.
    """
    # include/uapi/asm-generic/socket.h: "#define SO_BINDTODEVICE 25".
    option = getattr(socket, "SO_BINDTODEVICE", 25)
    sock.setsockopt(socket.SOL_SOCKET, option, ifname.encode())


def no_other_groups(sock: socket.socket, family: int) -> None:
    """Keep out of ``sock`` the groups other sockets joined on its port.

    Linux hands a socket bound to a port every group any socket on the host joined
    there (the default 1 of IP_MULTICAST_ALL, IPV6_MULTICAST_ALL); macOS, the BSDs
    and Windows filter by the socket's own memberships. Raises the kernel's OSError.
    """
    if family == socket.AF_INET:
        sock.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
        return
    try:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MULTICAST_ALL, 0)
    except OSError as exc:
        # Linux < 4.20 lacks the IPv6 option; other groups may then leak in.
        if exc.errno not in (errno.ENOPROTOOPT, errno.EINVAL):
            raise
