"""Every setsockopt, ancillary-data layout and errno decision lives here.

Each kernel quirk carries a one-line note saying why. Nothing here knows about
asyncio: these are blocking-free helpers over non-blocking sockets.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import socket
import struct
import sys
from collections.abc import Iterator, Sequence

from ._errors import MembershipLimitError, MulticastError
from ._model import Group, Interface

__all__ = [
    "ANC_BUFSIZE",
    "MSG_TRUNC",
    "RECV_BUFSIZE",
    "gone_error",
    "is_gone_error",
    "is_pktinfo",
    "join",
    "leave",
    "open_receiver",
    "open_sender",
    "parse_extras",
    "parse_pktinfo",
    "refresh_by_source_filter",
    "still_full_error",
]

_log = logging.getLogger("mcastio")

# Python's socket module lacks several Linux constants; values from the uapi headers.
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
IP_MULTICAST_ALL = getattr(socket, "IP_MULTICAST_ALL", 49)
IPV6_MULTICAST_ALL = getattr(socket, "IPV6_MULTICAST_ALL", 29)
IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)
MCAST_JOIN_SOURCE_GROUP = getattr(socket, "MCAST_JOIN_SOURCE_GROUP", 46)
MCAST_LEAVE_SOURCE_GROUP = getattr(socket, "MCAST_LEAVE_SOURCE_GROUP", 47)
SO_RXQ_OVFL = getattr(socket, "SO_RXQ_OVFL", 40)
IP_RECVTTL = getattr(socket, "IP_RECVTTL", 12)
IP_TTL = getattr(socket, "IP_TTL", 2)
IPV6_RECVHOPLIMIT = getattr(socket, "IPV6_RECVHOPLIMIT", 51)
IPV6_HOPLIMIT = getattr(socket, "IPV6_HOPLIMIT", 52)

# A plain int: '&' on the IntFlag member runs Python code for every datagram.
MSG_TRUNC = int(socket.MSG_TRUNC)

# Largest UDP payload plus one, so MSG_TRUNC can tell an oversize datagram apart.
RECV_BUFSIZE = 65536
# Room for pktinfo, a TTL or hop limit and the drop counter, with headroom.
ANC_BUFSIZE = socket.CMSG_SPACE(64) + 2 * socket.CMSG_SPACE(4)

# struct in_pktinfo { int ifindex; in_addr spec_dst; in_addr addr; }
_IN_PKTINFO = struct.Struct("=i4s4s")
# struct in6_pktinfo { in6_addr addr; unsigned int ifindex; }
_IN6_PKTINFO = struct.Struct("=16sI")
# struct ip_mreqn { in_addr multiaddr; in_addr address; int ifindex; }
_IP_MREQN = struct.Struct("=4s4si")
# struct ipv6_mreq { in6_addr multiaddr; unsigned int ifindex; }
_IPV6_MREQ = struct.Struct("=16sI")
# struct group_source_req { u32 interface; sockaddr_storage group, source; }: the
# storage is aligned like a pointer, so 4 bytes of padding on 64-bit ABIs, none on 32-bit.
_GROUP_SOURCE_REQ = struct.Struct(f"=I{struct.calcsize('P') - 4}x128s128s")


@contextlib.contextmanager
def _closed_on_failure(sock: socket.socket, what: str) -> Iterator[None]:
    """Close ``sock`` if setting it up fails; an OSError becomes a MulticastError."""
    try:
        yield
    except OSError as exc:
        sock.close()
        raise MulticastError(f"cannot open {what}: {exc}") from exc
    except BaseException:
        sock.close()
        raise


def open_receiver(
    group: Group, port: int, receive_buffer: int | None = None, *, receive_ttl: bool = False
) -> socket.socket:
    """A non-blocking socket bound to the port, joined to nothing yet."""
    sock = socket.socket(group.family, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    with _closed_on_failure(sock, f"a receive socket on port {port}"):
        # The kernel stamps its running count of datagrams dropped on this socket
        # (a full buffer) on the next datagram delivered: the only per-socket account.
        sock.setsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL, 1)
        if receive_buffer is not None:
            # The default (net.core.rmem_default, ~208 KiB) holds only ~250 small
            # datagrams, a few ms of a flood; the kernel caps this at net.core.rmem_max.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        # Lets avahi, another mcastio endpoint or any program using the same port coexist.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if group.family == socket.AF_INET:
            # Default 1 delivers every group any socket on the host joined on this port.
            sock.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
            # The only way to learn the arrival interface and the destination address.
            sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
            if receive_ttl:
                sock.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
            sock.bind(("0.0.0.0", port))
        else:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MULTICAST_ALL, 0)
            except OSError as exc:
                # Linux < 4.20 lacks the option; other groups may then leak in.
                if exc.errno not in (errno.ENOPROTOOPT, errno.EINVAL):
                    raise
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
            if receive_ttl:
                sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVHOPLIMIT, 1)
            sock.bind(("::", port))
        sock.setblocking(False)
    return sock


def _membership(group: Group, iface: Interface, source: str | None) -> tuple[int, int, bytes]:
    if source is not None:
        g = _sockaddr(group.address)
        s = _sockaddr(ipaddress.ip_address(source))
        level = socket.IPPROTO_IP if group.family == socket.AF_INET else socket.IPPROTO_IPV6
        return level, MCAST_JOIN_SOURCE_GROUP, _GROUP_SOURCE_REQ.pack(iface.index, g, s)
    if group.family == socket.AF_INET:
        # ip_mreqn by index: a join by address fails with EADDRINUSE on a second
        # address of the same interface and would join the same device twice.
        mreq = _IP_MREQN.pack(group.address.packed, b"\0\0\0\0", iface.index)
        return socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq
    return (
        socket.IPPROTO_IPV6,
        socket.IPV6_JOIN_GROUP,
        _IPV6_MREQ.pack(group.address.packed, iface.index),
    )


def _sockaddr(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bytes:
    if isinstance(addr, ipaddress.IPv4Address):
        raw = struct.pack("=H", socket.AF_INET) + b"\0\0" + addr.packed
    else:
        raw = struct.pack("=H", socket.AF_INET6) + b"\0\0" + b"\0\0\0\0" + addr.packed
    return raw.ljust(128, b"\0")


def join(sock: socket.socket, group: Group, iface: Interface, sources: Sequence[str] = ()) -> None:
    """Join ``group`` on ``iface`` (and each of ``sources`` for SSM)."""
    done: list[str | None] = []
    try:
        for source in sources or (None,):
            level, opt, value = _membership(group, iface, source)
            sock.setsockopt(level, opt, value)
            done.append(source)
    except OSError as exc:
        for source in done:
            try:
                _leave_one(sock, group, iface, source)
            except OSError as undo_exc:
                # The join error below is the one to report; this leftover (S,G)
                # dies with the socket or the interface.
                _log.warning("could not undo the join of %s on %s: %s", group, iface.name, undo_exc)
        if exc.errno == errno.ENOBUFS and done:
            # The group is joined, so the cap hit is the per-socket source-filter size;
            # another socket would hit it as well.
            limit = (
                "net.ipv4.igmp_max_msf"
                if group.family == socket.AF_INET
                else "net.ipv6.mld_max_msf"
            )
            raise MulticastError(
                f"the kernel refused source {sources[len(done)]} for {group} on {iface.name}: "
                f"at most sysctl {limit} sources per group and socket; use fewer sources "
                "or raise the sysctl"
            ) from exc
        if exc.errno == errno.ENOBUFS:
            raise MembershipLimitError(
                f"the kernel refused joining {group} on {iface.name}: this socket holds the "
                "maximum number of memberships (sysctl net.ipv4.igmp_max_memberships"
                + (")" if group.family == socket.AF_INET else "; for IPv6, net.core.optmem_max)")
            ) from exc
        raise MulticastError(f"cannot join {group} on {iface.name}: {exc}") from exc


def _leave_one(sock: socket.socket, group: Group, iface: Interface, source: str | None) -> None:
    level, opt, value = _membership(group, iface, source)
    if source is not None:
        opt = MCAST_LEAVE_SOURCE_GROUP
    elif group.family == socket.AF_INET:
        opt = socket.IP_DROP_MEMBERSHIP
    else:
        opt = socket.IPV6_LEAVE_GROUP
    try:
        sock.setsockopt(level, opt, value)
    except OSError as exc:
        # The device is gone and took the membership with it; nothing left to undo.
        if not is_gone_error(exc):
            raise


def leave(sock: socket.socket, group: Group, iface: Interface, sources: Sequence[str] = ()) -> None:
    try:
        for source in sources or (None,):
            _leave_one(sock, group, iface, source)
    except OSError as exc:
        raise MulticastError(f"cannot leave {group} on {iface.name}: {exc}") from exc


def gone_error(ifname: str) -> OSError:
    """What a send reports when its interface left while it waited."""
    return OSError(errno.ENODEV, f"{ifname} went away before the send")


def still_full_error() -> OSError:
    """What a send reports when its socket buffer never drained."""
    return OSError(errno.ENOBUFS, "the socket buffer stayed full for 1 s")


def is_gone_error(exc: OSError) -> bool:
    """The interface or membership no longer exists, so there is nothing to undo."""
    return exc.errno in (errno.ENODEV, errno.EADDRNOTAVAIL, errno.ENOENT, errno.ENXIO, errno.EINVAL)


def open_sender(group: Group, iface: Interface, ttl: int, loopback: bool) -> socket.socket:
    """A non-blocking socket whose multicast leaves by ``iface`` only."""
    sock = socket.socket(group.family, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    with _closed_on_failure(sock, f"a transmit socket on {iface.name}"):
        if group.family == socket.AF_INET:
            src = iface.ipv4[0].ip.packed if iface.ipv4 else b"\0\0\0\0"
            # ip_mreqn with an index and an address: the index picks the device even
            # when two interfaces share an address, the address becomes the source.
            sock.setsockopt(
                socket.IPPROTO_IP,
                socket.IP_MULTICAST_IF,
                _IP_MREQN.pack(b"\0\0\0\0", src, iface.index),
            )
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, int(loopback))
        else:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, iface.index)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, ttl)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, int(loopback))
        sock.setblocking(False)
    return sock


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
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO:
            ifindex, _spec, dst = _IN_PKTINFO.unpack_from(data)
            return ifindex, socket.inet_ntop(socket.AF_INET, dst)
        if level == socket.IPPROTO_IPV6 and kind == IPV6_PKTINFO:
            dst6, ifindex6 = _IN6_PKTINFO.unpack_from(data)
            return ifindex6, socket.inet_ntop(socket.AF_INET6, dst6)
    return None


# -- the membership keeper's unprivileged refresh ---------------------------------------

MCAST_BLOCK_SOURCE = getattr(socket, "MCAST_BLOCK_SOURCE", 43)
MCAST_UNBLOCK_SOURCE = getattr(socket, "MCAST_UNBLOCK_SOURCE", 44)
# Documentation prefixes (RFC 5737, RFC 3849): no real sender ever uses them.
_DUMMY_SOURCES = {
    socket.AF_INET: ("192.0.2.1", "192.0.2.2"),
    socket.AF_INET6: ("2001:db8::1", "2001:db8::2"),
}


def refresh_by_source_filter(
    sock: socket.socket, group: Group, iface: Interface, sources: Sequence[str] = ()
) -> None:
    """Make the kernel send a state-change report for ``group`` on ``iface``, unprivileged.

    Blocks then unblocks (for SSM: adds then drops) a source that never sends.
    IGMPv3/MLDv2 only: an IGMPv2 or MLDv1 host cannot express the change and sends nothing.
    """
    dummy = next(d for d in _DUMMY_SOURCES[group.family] if d not in sources)
    req = _GROUP_SOURCE_REQ.pack(
        iface.index, _sockaddr(group.address), _sockaddr(ipaddress.ip_address(dummy))
    )
    level = socket.IPPROTO_IP if group.family == socket.AF_INET else socket.IPPROTO_IPV6
    on, off = (
        (MCAST_JOIN_SOURCE_GROUP, MCAST_LEAVE_SOURCE_GROUP)
        if sources
        else (MCAST_BLOCK_SOURCE, MCAST_UNBLOCK_SOURCE)
    )
    try:
        sock.setsockopt(level, on, req)
    except OSError as exc:
        raise MulticastError(f"cannot refresh {group} on {iface.name}: {exc}") from exc
    try:
        # At once: the kernel merges the two changes into one report, so the filter
        # seen by the network never changes and nothing is left (no Leave either).
        sock.setsockopt(level, off, req)
    except OSError as exc:
        raise MulticastError(
            f"refreshed {group} on {iface.name} but could not undo the dummy source {dummy}: {exc}"
        ) from exc
