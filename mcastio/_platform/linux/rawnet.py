"""Raw IGMP/MLD sockets, the packet socket that watches them, and the beacon.

The kernel knowledge of the membership keeper and the backup querier, kept apart
from :mod:`._net` (the UDP sockets) but in its style: one line of why per quirk,
every OSError turned into a MulticastError. All of it needs root or CAP_NET_RAW,
except the beacon.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import ipaddress
import socket
import struct
from collections.abc import Sequence

from ..._errors import MulticastError, RawAccessError
from ..._model import Interface
from ..._net import (
    IP_PKTINFO,
    IPV6_PKTINFO,
    IPV6_RECVHOPLIMIT,
    IPV6_RECVPKTINFO,
    _closed_on_failure,
)
from ..cmsg import cmsg_space
from .ancillary import IN6_PKTINFO, IN_PKTINFO, parse_extras, parse_pktinfo

__all__ = [
    "BPF_HOPOPTS",
    "BPF_IGMP",
    "RawQuery",
    "link_mtu",
    "open_beacon",
    "open_raw",
    "open_watch",
    "read_queries",
    "read_watch",
    "send_raw",
]


IPV6_HOPOPTS = getattr(socket, "IPV6_HOPOPTS", 54)
IPV6_RECVHOPOPTS = getattr(socket, "IPV6_RECVHOPOPTS", 53)
# in6_pktinfo, the hop limit and a hop-by-hop header (MLD's is 8 bytes; room for more).
_QUERY_ANC = cmsg_space(20) + cmsg_space(4) + cmsg_space(64)
SO_ATTACH_FILTER = getattr(socket, "SO_ATTACH_FILTER", 26)
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD


_BpfProgram = Sequence[tuple[int, int, int, int]]
# Classic BPF over the network header (SOCK_DGRAM packet sockets start at layer 3).
# IPv4: ldb [9] (protocol); jeq #2 (IGMP) -> accept, else drop.
BPF_IGMP: _BpfProgram = ((0x30, 0, 0, 9), (0x15, 0, 1, 2), (0x06, 0, 0, 0x40000), (0x06, 0, 0, 0))
# IPv6: ldb [6] (next header); jeq #0 (hop-by-hop, which every MLD message carries
# for its Router Alert) -> accept, else drop. The ICMPv6 type is checked in Python.
BPF_HOPOPTS: _BpfProgram = (
    (0x30, 0, 0, 6),
    (0x15, 0, 1, 0),
    (0x06, 0, 0, 0x40000),
    (0x06, 0, 0, 0),
)
_BPF_NOTHING: _BpfProgram = ((0x06, 0, 0, 0),)
# Raw IPv4 sockets see the IP header: ldxb 4*([0]&0xf); ldb [x+0] (the IGMP type);
# jeq #0x11 (membership query) -> accept, else drop.
_BPF_IGMP_QUERY: _BpfProgram = (
    (0xB1, 0, 0, 0),
    (0x50, 0, 0, 0),
    (0x15, 0, 1, 0x11),
    (0x06, 0, 0, 0x40000),
    (0x06, 0, 0, 0),
)
ICMP6_FILTER = 1
# IP Router Alert (RFC 2113), which RFC 2236 and RFC 3376 put on every IGMP message.
_IP_ROUTER_ALERT = b"\x94\x04\x00\x00"
# Hop-by-hop header carrying Router Alert "MLD" (RFC 2711) and a PadN; the kernel
# fills in the next-header byte. Snooping bridges and listeners ignore MLD without it.
_HOPOPTS_ROUTER_ALERT_MLD = bytes((0, 0, 5, 2, 0, 0, 1, 0))


def _attach_filter(sock: socket.socket, program: _BpfProgram) -> None:
    code = b"".join(struct.pack("=HBBI", *insn) for insn in program)
    buf = ctypes.create_string_buffer(code, len(code))
    # struct sock_fprog { unsigned short len; struct sock_filter *filter; }; the
    # kernel copies the program, so the buffer may go when the call returns.
    sock.setsockopt(
        socket.SOL_SOCKET, SO_ATTACH_FILTER, struct.pack("HL", len(program), ctypes.addressof(buf))
    )


def _raw_socket(family: int, kind: int, proto: int, what: str) -> socket.socket:
    try:
        return socket.socket(family, kind, proto)
    except PermissionError as exc:
        raise RawAccessError(f"{what} needs root or CAP_NET_RAW: {exc.strerror}") from exc
    except OSError as exc:
        if exc.errno == errno.EAFNOSUPPORT:
            raise RawAccessError(f"{what}: this kernel lacks the socket family: {exc}") from exc
        raise MulticastError(f"cannot open {what}: {exc}") from exc


def open_raw(
    family: socket.AddressFamily, *, loop: bool = False, hear_queries: bool = False
) -> socket.socket:
    """A raw IGMP or ICMPv6 socket for reports and queries, link-scoped.

    ``loop`` lets this host's own stack hear what is sent: a querier's host then
    answers its queries like every other host on the link. ``hear_queries`` makes it
    receive the membership queries the host accepts (see :func:`read_queries`); else
    it is send-only.
    """
    v4 = family == socket.AF_INET
    proto = socket.IPPROTO_IGMP if v4 else socket.IPPROTO_ICMPV6
    sock = _raw_socket(family, socket.SOCK_RAW, proto, "sending IGMP/MLD messages")
    with _closed_on_failure(sock, "a raw IGMP/MLD socket"):
        if v4:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, int(loop))
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_OPTIONS, _IP_ROUTER_ALERT)
        else:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, int(loop))
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_HOPOPTS, _HOPOPTS_ROUTER_ALERT_MLD)
        if not hear_queries:
            # Send-only: a raw socket also receives every IGMP/ICMPv6 packet the host
            # gets, which would queue here unread.
            _attach_filter(sock, _BPF_NOTHING)
        elif v4:
            # A raw socket gets what passed rp_filter and the firewall: the queries
            # the kernel answers, not the ones it drops (a packet socket sees those).
            sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
            _attach_filter(sock, _BPF_IGMP_QUERY)
        else:
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
            # RFC 3810 §6.2: a query counts only with hop limit 1 and Router Alert,
            # and a raw socket gets it before the kernel checks either.
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVHOPLIMIT, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVHOPOPTS, 1)
            # The kernel's own ICMPv6 type filter: block all but MLD queries (130).
            sock.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, _icmp6_filter(130))
        sock.setblocking(False)
    return sock


def _icmp6_filter(allowed: int) -> bytes:
    # struct icmp6_filter { __u32 icmp6_filt[8]; }: a set bit blocks that type.
    words = [0xFFFFFFFF] * 8
    words[allowed >> 5] &= ~(1 << (allowed & 31)) & 0xFFFFFFFF
    return struct.pack("=8I", *words)


RawQuery = tuple[int, str, bytes, int | None, bytes]


def read_queries(sock: socket.socket, batch: int = 64) -> list[RawQuery]:
    """(arrival ifindex, source, message, hop limit, hop-by-hop header) per queued query.

    IPv4 messages start at the IP header (TTL and options are in it; the last two
    fields are None and empty), IPv6 ones at the ICMPv6 header.
    """
    got: list[RawQuery] = []
    for _ in range(batch):
        try:
            data, anc, _flags, addr = sock.recvmsg(65535, _QUERY_ANC)
        except (BlockingIOError, InterruptedError):
            break
        except OSError as exc:
            raise MulticastError(f"cannot read the raw IGMP/MLD socket: {exc}") from exc
        info = parse_pktinfo(anc)
        if info is None:
            continue
        hop_limit, _drops = parse_extras(anc)
        hopopts = next(
            (d for lvl, kind, d in anc if lvl == socket.IPPROTO_IPV6 and kind == IPV6_HOPOPTS),
            b"",
        )
        got.append((info[0], str(addr[0]).partition("%")[0], data, hop_limit, hopopts))
    return got


def send_raw(
    sock: socket.socket,
    iface: Interface,
    source: str | ipaddress.IPv4Address | ipaddress.IPv6Address,
    payload: bytes,
    dest: str,
) -> None:
    """Send ``payload`` out of ``iface`` from ``source`` (an address of ``iface``)."""
    src = ipaddress.ip_address(source) if isinstance(source, str) else source
    try:
        if isinstance(src, ipaddress.IPv4Address):
            # IP_PKTINFO picks the device and the source per message.
            info = IN_PKTINFO.pack(iface.index, src.packed, b"\0\0\0\0")
            sock.sendmsg([payload], [(socket.IPPROTO_IP, IP_PKTINFO, info)], 0, (dest, 0))
        else:
            info = IN6_PKTINFO.pack(src.packed, iface.index)
            sock.sendmsg(
                [payload], [(socket.IPPROTO_IPV6, IPV6_PKTINFO, info)], 0, (dest, 0, 0, iface.index)
            )
    except OSError as exc:
        raise MulticastError(f"cannot send to {dest} on {iface.name}: {exc}") from exc


def open_watch(family: socket.AddressFamily) -> socket.socket:
    """A non-blocking packet socket that sees IGMP (or hop-by-hop IPv6) on every interface.

    A packet socket sees queries before the IP layer judges them (rp_filter, MLD's
    link-local rule), and this host's own outgoing reports.
    """
    ethertype, program = (
        (ETH_P_IP, BPF_IGMP) if family == socket.AF_INET else (ETH_P_IPV6, BPF_HOPOPTS)
    )
    sock = _raw_socket(
        socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ethertype), "watching IGMP/MLD queries"
    )
    with _closed_on_failure(sock, "a packet socket"):
        _attach_filter(sock, program)
        sock.setblocking(False)
    return sock


# Per readiness event, so a flood of IGMP cannot hold the event loop.
_WATCH_BATCH = 64


def read_watch(sock: socket.socket) -> list[tuple[str, bytes, bool]]:
    """(interface name, packet from the IP header, sent by this host) for what is queued."""
    got: list[tuple[str, bytes, bool]] = []
    for _ in range(_WATCH_BATCH):
        try:
            packet, addr = sock.recvfrom(65535)
        except (BlockingIOError, InterruptedError):
            break
        except OSError as exc:
            raise MulticastError(f"cannot read the packet socket: {exc}") from exc
        got.append((addr[0], packet, addr[2] == socket.PACKET_OUTGOING))
    return got


def open_beacon(name: str) -> socket.socket:
    """Bind an abstract unix socket named ``name``: doctor finds it in /proc/net/unix."""
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    except OSError as exc:
        raise MulticastError(f"cannot open the beacon {name}: {exc}") from exc
    with _closed_on_failure(sock, f"the beacon {name}"):
        sock.setblocking(False)
        # Abstract names live in the network namespace and vanish with the socket.
        sock.bind("\0" + name)
    return sock


_SIOCGIFMTU = 0x8921


def link_mtu(sock: socket.socket, ifname: str) -> int | None:
    """The MTU of ``ifname`` (SIOCGIFMTU on any socket), or ``None`` if the kernel will not say."""
    # struct ifreq: the name in 16 bytes, then a union whose ifr_mtu is an int.
    request = struct.pack("16si20x", ifname.encode()[:15], 0)
    try:
        reply = fcntl.ioctl(sock.fileno(), _SIOCGIFMTU, request)
    except OSError:
        return None  # the device went away; the send that follows says so
    mtu: int = struct.unpack_from("16xi", reply)[0]
    return mtu
