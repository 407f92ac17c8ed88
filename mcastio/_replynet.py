"""Socket settings of a transmit socket that reads replies. Kernel knowledge, one place.

A transmit socket has a port of its own, which any host that hears one of our
copies learns. The settings here bound what that port lets in:

- a receive buffer sized for a discovery burst (1,000 answers of 360 bytes lost
  834 with the kernel's default 208 KiB);
- on Linux, SO_RXQ_OVFL, so the kernel's drops are counted
  (``EndpointStats.kernel_dropped``);
- a socket filter that takes only datagrams addressed to this host
  (``PACKET_HOST``): broadcast, to 255.255.255.255 or the subnet's broadcast
  address, and multicast are no reply and never queue here.
"""

from __future__ import annotations

import errno
import socket
import sys

from ._platform.linux import sender as _linux_sender

__all__ = ["REPLY_BUFFER", "prepare_reply_socket", "refuse_replies"]

#: Bytes of receive buffer asked for (the kernel doubles it for its bookkeeping).
REPLY_BUFFER = 2 * 1024 * 1024
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
# Classic BPF: ld the packet type (SKF_AD_OFF + SKF_AD_PKTTYPE); jeq #0 (PACKET_HOST)
# -> accept, else drop.
_HOST_ONLY = ((0x20, 0, 0, 0xFFFFF004), (0x15, 0, 1, 0), (0x06, 0, 0, 0x40000), (0x06, 0, 0, 0))
# Classic BPF: ret #0, drop everything.
_NOTHING = ((0x06, 0, 0, 0),)


def prepare_reply_socket(sock: socket.socket) -> None:
    """Size, count and filter ``sock`` for replies; raises OSError as setsockopt does."""
    try:
        # Past net.core.rmem_max: needs CAP_NET_ADMIN (root, or a user namespace's owner).
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, REPLY_BUFFER)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, REPLY_BUFFER)
    if sys.platform.startswith("linux"):
        # Linux's option; elsewhere its number names another option, or none.
        _linux_sender.stamp_drops(sock)
    _attach_filter(sock, _HOST_ONLY)


def _attach_filter(sock: socket.socket, program: tuple[tuple[int, int, int, int], ...]) -> None:
    # Linux's socket filters: rawnet is imported where one is attached, never by
    # ``import mcastio`` (mcastio._platform.LINUX_ONLY_MODULES).
    if not sys.platform.startswith("linux"):
        # No SO_ATTACH_FILTER elsewhere (and no fcntl for _rawnet on Windows): the
        # callers report an OSError and go on without the filter.
        raise OSError(errno.ENOPROTOOPT, "socket filters are Linux's (SO_ATTACH_FILTER)")
    from ._platform.linux.rawnet import _attach_filter as attach

    attach(sock, program)


def refuse_replies(sock: socket.socket) -> None:
    """Let nothing queue on ``sock``; raises OSError as setsockopt does.

    A datagram a socket filter drops is discarded before it takes buffer memory or
    wakes the loop, and the kernel counts it in the socket's drops (sk_drops, read
    with SO_MEMINFO), so the discarded replies are counted without being read.
    """
    _attach_filter(sock, _NOTHING)
    # Nothing is ever queued: the smallest buffer the kernel allows.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
