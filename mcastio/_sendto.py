"""A unicast datagram pinned to one interface and one source address.

Part of the socket layer with :mod:`._net` (whose pktinfo layouts it uses): the
one socket fact an answer needs. Nothing here knows about asyncio.
"""

from __future__ import annotations

import socket

from ._net import IP_PKTINFO, IPV6_PKTINFO
from ._platform.linux.ancillary import IN6_PKTINFO, IN_PKTINFO

__all__ = ["send_unicast"]


def send_unicast(
    sock: socket.socket,
    data: bytes | bytearray | memoryview,
    dest: tuple[str, int] | tuple[str, int, int, int],
    ifindex: int,
    source: str,
) -> int:
    """Send ``data`` to one host by ``ifindex``, from ``source`` ("": the kernel's pick).

    IP_PKTINFO / IPV6_PKTINFO on sendmsg pin the device even where SO_BINDTODEVICE
    was refused, and the source address even on a socket bound to the group's
    address (which then sends from the group's port: RFC 6762 §6.7 answers).
    """
    if sock.family == socket.AF_INET:
        spec = socket.inet_aton(source) if source else bytes(4)
        info = (socket.IPPROTO_IP, IP_PKTINFO, IN_PKTINFO.pack(ifindex, spec, bytes(4)))
    else:
        src = socket.inet_pton(socket.AF_INET6, source) if source else bytes(16)
        info = (socket.IPPROTO_IPV6, IPV6_PKTINFO, IN6_PKTINFO.pack(src, ifindex))
    return sock.sendmsg([data], [info], 0, dest)
