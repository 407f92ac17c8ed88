"""Watch IGMP queries on every interface with an AF_PACKET socket.

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
from collections.abc import Callable

from ._errors import MulticastError

__all__ = ["CaptureUnavailable", "capture_igmp"]

ETH_P_IP = 0x0800
SO_ATTACH_FILTER = getattr(socket, "SO_ATTACH_FILTER", 26)
# Classic BPF over the IP header (SOCK_DGRAM packet sockets start at layer 3):
# ldb [9] (protocol); jeq #2 (IGMP) -> accept whole packet, else drop.
_BPF_IGMP = (
    (0x30, 0, 0, 9),
    (0x15, 0, 1, 2),
    (0x06, 0, 0, 0x40000),
    (0x06, 0, 0, 0),
)


class CaptureUnavailable(MulticastError):
    """The capture cannot run here (usually: not root and no CAP_NET_RAW)."""


def _attach_filter(sock: socket.socket) -> ctypes.Array[ctypes.c_char]:
    program = b"".join(struct.pack("=HBBI", *insn) for insn in _BPF_IGMP)
    buf = ctypes.create_string_buffer(program, len(program))
    # struct sock_fprog { unsigned short len; struct sock_filter *filter; }
    fprog = struct.pack("HL", len(_BPF_IGMP), ctypes.addressof(buf))
    # Without the filter every IP packet on the host is copied to us for the window.
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
    return buf


def capture_igmp(
    duration: float,
    on_packet: Callable[[str, bytes, float], None],
    *,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Call ``on_packet(interface, ip_packet, when)`` for every IGMP packet seen.

    Runs for ``duration`` seconds, blocking. Raises ``CaptureUnavailable`` with the
    reason when a packet socket cannot be opened.
    """
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
    except PermissionError as exc:
        raise CaptureUnavailable(
            f"watching IGMP queries needs a packet socket (root or CAP_NET_RAW): {exc.strerror}"
        ) from exc
    except OSError as exc:
        if exc.errno in (errno.EAFNOSUPPORT, errno.EPERM):
            raise CaptureUnavailable(f"cannot open a packet socket: {exc}") from exc
        raise MulticastError(f"cannot open a packet socket: {exc}") from exc
    with sock, selectors.DefaultSelector() as sel:
        try:
            _keep = _attach_filter(sock)
        except OSError as exc:
            raise MulticastError(f"cannot attach the IGMP filter: {exc}") from exc
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ)
        deadline = clock() + duration
        while (left := deadline - clock()) > 0:
            if not sel.select(left):
                continue
            while True:
                try:
                    packet, addr = sock.recvfrom(65535)
                except (BlockingIOError, InterruptedError):
                    break
                # sll_pkttype PACKET_OUTGOING (4): our own reports, not someone's query.
                if addr[2] == socket.PACKET_OUTGOING:
                    continue
                on_packet(addr[0], packet, clock())
        del _keep
