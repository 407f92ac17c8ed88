"""Watch IGMP and MLD queries on every interface with AF_PACKET sockets.

An IP raw socket (IPPROTO_IGMP) would only see queries that survived rp_filter;
a packet socket sees them before the IP layer judges them, which is the point.
"""

from __future__ import annotations

import ctypes
import errno
import selectors
import socket
import struct
import time
from collections.abc import Callable, Sequence

from .._errors import MulticastError

__all__ = ["CaptureUnavailable", "capture_igmp", "capture_queries"]

ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
SO_ATTACH_FILTER = getattr(socket, "SO_ATTACH_FILTER", 26)

Program = Sequence[tuple[int, int, int, int]]
# Classic BPF over the network header (SOCK_DGRAM packet sockets start at layer 3).
# IPv4: ldb [9] (protocol); jeq #2 (IGMP) -> accept, else drop.
_BPF_IGMP: Program = (
    (0x30, 0, 0, 9),
    (0x15, 0, 1, 2),
    (0x06, 0, 0, 0x40000),
    (0x06, 0, 0, 0),
)
# IPv6: ldb [6] (next header); jeq #0 (hop-by-hop, which every MLD message carries
# for its Router Alert) -> accept, else drop. The ICMPv6 type is checked in Python.
_BPF_HOPOPTS: Program = (
    (0x30, 0, 0, 6),
    (0x15, 0, 1, 0),
    (0x06, 0, 0, 0x40000),
    (0x06, 0, 0, 0),
)


class CaptureUnavailable(MulticastError):
    """The capture cannot run here (usually: not root and no CAP_NET_RAW)."""


def _attach_filter(sock: socket.socket, program: Program) -> ctypes.Array[ctypes.c_char]:
    code = b"".join(struct.pack("=HBBI", *insn) for insn in program)
    buf = ctypes.create_string_buffer(code, len(code))
    # struct sock_fprog { unsigned short len; struct sock_filter *filter; }
    fprog = struct.pack("HL", len(program), ctypes.addressof(buf))
    # Without the filter every packet on the host is copied to us for the window.
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
    return buf


def _open(ethertype: int) -> socket.socket:
    try:
        return socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ethertype))
    except PermissionError as exc:
        raise CaptureUnavailable(
            f"watching IGMP queries needs a packet socket (root or CAP_NET_RAW): {exc.strerror}"
        ) from exc
    except OSError as exc:
        if exc.errno == errno.EAFNOSUPPORT:
            raise CaptureUnavailable(f"this kernel has no packet sockets: {exc}") from exc
        raise MulticastError(f"cannot open a packet socket: {exc}") from exc


def capture_queries(
    duration: float,
    on_packet: Callable[[str, bytes, float], None],
    *,
    ipv6: bool = True,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Call ``on_packet(interface, packet, when)`` for IGMP (and hop-by-hop IPv6) packets.

    ``packet`` starts at the IP header. Runs for ``duration`` seconds, blocking.
    Raises ``CaptureUnavailable`` with the reason when packet sockets cannot be used.
    """
    wanted = [(ETH_P_IP, _BPF_IGMP)] + ([(ETH_P_IPV6, _BPF_HOPOPTS)] if ipv6 else [])
    socks: list[socket.socket] = []
    keep: list[ctypes.Array[ctypes.c_char]] = []
    try:
        with selectors.DefaultSelector() as sel:
            for ethertype, program in wanted:
                sock = _open(ethertype)
                socks.append(sock)
                try:
                    keep.append(_attach_filter(sock, program))
                except OSError as exc:
                    raise MulticastError(f"cannot attach a packet filter: {exc}") from exc
                sock.setblocking(False)
                sel.register(sock, selectors.EVENT_READ)
            deadline = clock() + duration
            while (left := deadline - clock()) > 0:
                for key, _ in sel.select(left):
                    _drain(key.fileobj, on_packet, clock)  # type: ignore[arg-type]
    finally:
        for sock in socks:
            sock.close()
        keep.clear()


def _drain(
    sock: socket.socket, on_packet: Callable[[str, bytes, float], None], clock: Callable[[], float]
) -> None:
    while True:
        try:
            packet, addr = sock.recvfrom(65535)
        except (BlockingIOError, InterruptedError):
            return
        # sll_pkttype PACKET_OUTGOING: this host's own reports, not someone's query.
        if addr[2] == socket.PACKET_OUTGOING:
            continue
        on_packet(addr[0], packet, clock())


def capture_igmp(
    duration: float,
    on_packet: Callable[[str, bytes, float], None],
    *,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """:func:`capture_queries` for IPv4 (IGMP) only."""
    capture_queries(duration, on_packet, ipv6=False, clock=clock)
