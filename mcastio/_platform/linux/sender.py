"""The Linux profile's transmit sockets: the options only Linux's kernel takes.

What :mod:`mcastio._txnet` and :mod:`mcastio._replynet` ask of Linux alone: the
outgoing interface named by index with ``ip_mreqn``, other groups kept out of a
socket on a port (:func:`no_other_groups`), and the drop count stamped on each
reply. Importable on every OS; called where the platform is Linux (the portable
profile names the interface by address, :func:`mcastio._txnet.open_sender`).
"""

from __future__ import annotations

import socket

from . import IP_MREQN, SO_RXQ_OVFL, no_other_groups

__all__ = ["multicast_if", "no_other_groups", "stamp_drops"]


def multicast_if(sock: socket.socket, index: int, source: bytes) -> None:
    """IPv4 ``IP_MULTICAST_IF`` with an ``ip_mreqn``: the device by index, the source by address.

    The index picks the device even when two interfaces share an address (which the
    4-byte address form cannot tell apart); the address becomes the copies' source.
    Raises the kernel's OSError (ENODEV for an index that is gone).
    """
    sock.setsockopt(
        socket.IPPROTO_IP, socket.IP_MULTICAST_IF, IP_MREQN.pack(b"\0\0\0\0", source, index)
    )


def stamp_drops(sock: socket.socket) -> None:
    """SO_RXQ_OVFL: each datagram read carries the socket's running drop count."""
    sock.setsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL, 1)
