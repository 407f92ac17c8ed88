"""A minimal rtnetlink listener: link and address change notifications on Linux.

Messages are only used as *triggers*; the truth is re-read from the snapshot
source afterwards, so nothing here decodes more than the headers and the link
flags. Nothing here knows about asyncio.
"""

from __future__ import annotations

import errno
import socket
import struct
from dataclasses import dataclass

from .linkfacts import dump_request

__all__ = [
    "IFF_LOWER_UP",
    "IFF_RUNNING",
    "IFF_UP",
    "MAX_READS",
    "Drained",
    "LinkFlags",
    "drain",
    "open_listener",
    "parse_counted",
    "parse_messages",
    "request_links",
]

# Multicast group bitmasks for bind() (include/uapi/linux/rtnetlink.h).
RTMGRP_LINK = 0x1
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV6_IFADDR = 0x100

RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_GETLINK = 18
RTM_NEWADDR = 20
RTM_DELADDR = 21
NLMSG_ERROR = 2
NLMSG_OVERRUN = 4
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
# Counts every carrier-on since the device was created (Linux >= 4.16).
IFLA_CARRIER_UP_COUNT = 47

# include/uapi/linux/if.h
IFF_UP = 0x1
IFF_RUNNING = 0x40
IFF_LOWER_UP = 0x10000

# struct nlmsghdr { u32 len; u16 type; u16 flags; u32 seq; u32 pid; }
_NLMSGHDR = struct.Struct("=IHHII")
# struct ifinfomsg { u8 family; u8 pad; u16 type; i32 index; u32 flags; u32 change; }
_IFINFOMSG = struct.Struct("=BxHiII")
# struct rtattr { u16 len; u16 type; }
_RTATTR = struct.Struct("=HH")

# Room for a burst of notifications (an interface with many addresses going away
# emits one message per address); overflow is detected as ENOBUFS, not lost silently.
_RCVBUF = 1 << 20
_READ_SIZE = 1 << 16
# Reads per readiness event: enough to empty a full buffer, bounded so a storm
# of changes cannot hold the event loop.
MAX_READS = 64


@dataclass(frozen=True, slots=True)
class LinkFlags:
    """One RTM_NEWLINK/RTM_DELLINK notification's interface flags."""

    index: int
    flags: int
    deleted: bool = False
    #: IFLA_CARRIER_UP_COUNT, or None on kernels without it.
    carrier_ups: int | None = None

    @property
    def carrier(self) -> bool:
        # IFF_LOWER_UP follows the carrier at once; IFF_RUNNING lags behind it
        # (linkwatch updates the operational state later), so it would hide short drops.
        return bool(self.flags & IFF_UP) and bool(self.flags & IFF_LOWER_UP)


@dataclass(frozen=True, slots=True)
class Drained:
    """What one drain of the socket found."""

    messages: int
    #: The kernel dropped notifications (ENOBUFS): the caller must re-read everything.
    lost: bool
    links: tuple[LinkFlags, ...] = ()
    #: Of ``messages``, answers to our own dump request (a non-zero sequence number),
    #: not notifications: they report no change.
    replies: int = 0
    #: The read limit stopped the drain: the socket may hold more.
    more: bool = False


def open_listener() -> socket.socket:
    """A non-blocking NETLINK_ROUTE socket subscribed to link and address changes.

    Raises ``OSError`` where netlink is unavailable (not Linux, or a sandbox that
    forbids it); the caller falls back to polling.
    """
    if not hasattr(socket, "AF_NETLINK"):
        raise OSError(errno.EAFNOSUPPORT, "AF_NETLINK is not available on this platform")
    sock = socket.socket(
        socket.AF_NETLINK,
        socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
        socket.NETLINK_ROUTE,
    )
    try:
        # The default buffer overflows when a device with many addresses goes away.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
        # Port id 0 lets the kernel pick a unique one, so several endpoints coexist.
        sock.bind((0, RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR))
    except BaseException:
        sock.close()
        raise
    return sock


def request_links(sock: socket.socket) -> None:
    """Ask for a dump of every link; the replies arrive like notifications.

    They give the carrier counters a starting point, so a flap that happens
    before the first notification is still seen as one.
    """
    # Without the counters: a third of the bytes, read on the loop.
    # Port id 0 is the kernel.
    sock.sendto(dump_request(RTM_GETLINK, 1), (0, 0))


def _carrier_ups(data: bytes, start: int, end: int) -> int | None:
    offset = start
    while offset + _RTATTR.size <= end:
        length, kind = _RTATTR.unpack_from(data, offset)
        if length < _RTATTR.size or offset + length > end:
            return None
        if kind == IFLA_CARRIER_UP_COUNT and length >= _RTATTR.size + 4:
            value: int = struct.unpack_from("=I", data, offset + _RTATTR.size)[0]
            return value
        offset += (length + 3) & ~3
    return None


def parse_messages(data: bytes) -> tuple[int, bool, list[LinkFlags]]:
    """(message count, overrun seen, link notifications) in one datagram of messages."""
    count, overrun, links, _replies = parse_counted(data)
    return count, overrun, links


def parse_counted(data: bytes, port_id: int = 0) -> tuple[int, bool, list[LinkFlags], int]:
    """:func:`parse_messages`, plus how many messages answer a request of the
    socket whose netlink port id is ``port_id``.

    Answers carry the requester's port id; a notification carries that of the
    process whose request caused it (``ip addr add``), or 0 from the kernel.
    """
    count = 0
    replies = 0
    overrun = False
    links: list[LinkFlags] = []
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, kind, _flags, _seq, pid = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size or offset + length > len(data):
            break  # A truncated or corrupt message; the caller re-reads anyway.
        count += 1
        if port_id and pid == port_id:
            replies += 1
        body = offset + _NLMSGHDR.size
        if kind == NLMSG_OVERRUN:
            overrun = True
        elif kind in (RTM_NEWLINK, RTM_DELLINK) and body + _IFINFOMSG.size <= offset + length:
            _family, _type, index, flags, _change = _IFINFOMSG.unpack_from(data, body)
            ups = _carrier_ups(data, body + _IFINFOMSG.size, offset + length)
            links.append(LinkFlags(index, flags, kind == RTM_DELLINK, ups))
        # Messages are padded to 4 bytes (NLMSG_ALIGN).
        offset += (length + 3) & ~3
    return count, overrun, links, replies


def drain(sock: socket.socket, reads: int = MAX_READS) -> Drained:
    """Read the pending notifications without blocking, at most ``reads`` datagrams."""
    count = 0
    replies = 0
    lost = False
    links: list[LinkFlags] = []
    port_id: int = sock.getsockname()[0]
    more = False
    for done in range(reads + 1):
        if done == reads:
            more = True
            break
        try:
            data = sock.recv(_READ_SIZE)
        except (BlockingIOError, InterruptedError):
            break
        except OSError as exc:
            if exc.errno == errno.ENOBUFS:
                # The receive buffer overflowed and notifications were dropped;
                # the socket stays usable, so keep reading what is left.
                lost = True
                continue
            raise
        if not data:
            break
        n, overrun, found, answers = parse_counted(data, port_id)
        count += n
        replies += answers
        lost = lost or overrun
        links.extend(found)
    return Drained(count, lost, tuple(links), replies, more)
