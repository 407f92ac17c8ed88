"""The Linux profile's receive socket and its joins: every setsockopt and errno decision.

One socket bound to (group, port), ``IP_MULTICAST_ALL`` off, the kernel's drop
count read with ``SO_MEMINFO`` (or stamped with ``SO_RXQ_OVFL``), joined by index
with Linux's ``ip_mreqn`` and ``group_source_req`` layouts; the refresh by
source filter the keeper uses. What every OS shares (the socket's creation,
the shared bind, the errno classes) is :mod:`mcastio._net`'s; the portable
profile joins with :mod:`mcastio._platform.joins` instead.

Importable on every OS (``import mcastio`` imports it through the memberships),
it is used by the Linux profile only. Each kernel quirk carries a one-line note
saying why.
"""

from __future__ import annotations

import errno
import functools
import ipaddress
import logging
import socket
import struct
from collections.abc import Sequence

from ..._errors import MembershipLimitError, MulticastError
from ..._model import Group, Interface
from ..._net import (
    IP_PKTINFO,
    IP_RECVTTL,
    IPV6_RECVHOPLIMIT,
    IPV6_RECVPKTINFO,
    _bind_shared,
    _closed_on_failure,
    _group_sockaddr,
    _new_socket,
    is_gone_error,
)
from . import (
    IP_MREQN,
    MCAST_BLOCK_SOURCE,
    MCAST_JOIN_SOURCE_GROUP,
    MCAST_LEAVE_SOURCE_GROUP,
    MCAST_UNBLOCK_SOURCE,
    SO_MEMINFO,
    SO_RXQ_OVFL,
    no_other_groups,
)

__all__ = [
    "MEMINFO_SIZE",
    "STAMP_DROPS",
    "join",
    "leave",
    "open_receiver",
    "refresh_by_source_filter",
    "socket_drops",
]

_log = logging.getLogger("mcastio")

# struct ipv6_mreq { in6_addr multiaddr; unsigned int ifindex; }
_IPV6_MREQ = struct.Struct("=16sI")
# struct group_source_req { u32 interface; sockaddr_storage group, source; }: the
# storage is aligned like a pointer, so 4 bytes of padding on 64-bit ABIs, none on 32-bit.
_GROUP_SOURCE_REQ = struct.Struct(f"=I{struct.calcsize('P') - 4}x128s128s")


#: Ask for SO_RXQ_OVFL even where SO_MEMINFO works (tests: both drains parse it).
STAMP_DROPS = False
# struct sk_meminfo is SK_MEMINFO_VARS u32s; the drop count is the ninth (linux/sock_diag.h).
MEMINFO_SIZE = 9 * 4
_MEMINFO = struct.Struct(f"={MEMINFO_SIZE // 4}I")


def socket_drops(sock: socket.socket) -> int | None:
    """Datagrams the kernel has dropped on ``sock`` so far, or None where it cannot say.

    SO_RXQ_OVFL only reports the count on the next datagram delivered, so drops in
    a final burst would stay unseen; SO_MEMINFO reads the same counter on demand.
    """
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, _MEMINFO.size)
    except OSError:
        # Linux < 4.6 lacks SO_MEMINFO; the SO_RXQ_OVFL reports remain.
        return None
    if len(raw) < _MEMINFO.size:
        return None
    return int(_MEMINFO.unpack(raw)[8])


def _drops_on_demand(sock: socket.socket) -> bool:
    """Whether SO_MEMINFO reads ``sock``'s count of dropped datagrams (Linux 4.6+)."""
    return socket_drops(sock) is not None


def open_receiver(
    group: Group,
    port: int,
    receive_buffer: int | None = None,
    *,
    receive_ttl: bool = False,
    scope: int = 0,
) -> socket.socket:
    """A non-blocking socket bound to (group, port), joined to nothing yet.

    ``scope`` is the interface index a link-scope IPv6 group needs (see
    :func:`bind_needs_scope`); the socket then receives from that interface only.
    """
    sock = _new_socket(group.family, f"a receive socket on port {port}")
    with _closed_on_failure(sock, f"a receive socket on port {port}"):
        # SO_MEMINFO reads the socket's drop count whenever asked; only where it is
        # missing (Linux < 4.6) is the count stamped on each datagram (SO_RXQ_OVFL),
        # which sends every datagram read through the kernel's __sock_recv_cmsgs.
        if STAMP_DROPS or not _drops_on_demand(sock):
            sock.setsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL, 1)
        if receive_buffer is not None:
            # The default (net.core.rmem_default, ~208 KiB) holds only ~250 small
            # datagrams, a few ms of a flood; the kernel caps this at net.core.rmem_max.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        if group.family == socket.AF_INET:
            # Default 1 delivers every group any socket on the host joined on this port.
            no_other_groups(sock, group.family)
            # The only way to learn the arrival interface and the destination address.
            sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
            if receive_ttl:
                sock.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            no_other_groups(sock, group.family)
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
            if receive_ttl:
                sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVHOPLIMIT, 1)
        _bind_shared(sock, _group_sockaddr(group, port, scope))
        sock.setblocking(False)
    return sock


def _membership(group: Group, iface: Interface, source: str | None) -> tuple[int, int, bytes]:
    return _membership_at(group, iface.index, source)


# The same (group, interface) is joined by every endpoint of the group, and again
# after a re-join: the request is packed once (4,096 joins at N = 1,024, G = 4).
@functools.lru_cache(maxsize=8192)
def _membership_at(group: Group, index: int, source: str | None) -> tuple[int, int, bytes]:
    if source is not None:
        g = _sockaddr(group.address)
        s = _sockaddr(ipaddress.ip_address(source))
        level = socket.IPPROTO_IP if group.family == socket.AF_INET else socket.IPPROTO_IPV6
        return level, MCAST_JOIN_SOURCE_GROUP, _GROUP_SOURCE_REQ.pack(index, g, s)
    if group.family == socket.AF_INET:
        # ip_mreqn by index: a join by address fails with EADDRINUSE on a second
        # address of the same interface and would join the same device twice.
        mreq = IP_MREQN.pack(group.address.packed, b"\0\0\0\0", index)
        return socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq
    return (
        socket.IPPROTO_IPV6,
        socket.IPV6_JOIN_GROUP,
        _IPV6_MREQ.pack(group.address.packed, index),
    )


# Linux's sockaddr: a 16-bit family first, no BSD sin_len byte before it.
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
        if _is_membership_limit(exc, group):
            limit = (
                # ENOBUFS: the count cap, or the socket's option memory ran out first.
                "net.ipv4.igmp_max_memberships or net.core.optmem_max"
                if group.family == socket.AF_INET
                else "net.core.optmem_max"
            )
            code = errno.errorcode.get(exc.errno or 0, str(exc.errno))
            raise MembershipLimitError(
                f"the kernel refused joining {group} on {iface.name} ({code}): this socket "
                f"holds as many memberships as sysctl {limit} allows"
            ) from exc
        raise MulticastError(f"cannot join {group} on {iface.name}: {exc}") from exc


def _is_membership_limit(exc: OSError, group: Group) -> bool:
    """Whether a join failed because this socket is full, so another socket may hold it."""
    if exc.errno == errno.ENOBUFS:
        return True
    # IPv6 has no count cap: each membership is charged to the socket's option
    # memory (net.core.optmem_max), and running out of it is ENOMEM, not ENOBUFS.
    return group.family == socket.AF_INET6 and exc.errno == errno.ENOMEM


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


# -- the membership keeper's unprivileged refresh ---------------------------------------

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
