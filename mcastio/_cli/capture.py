"""Watch IGMP and MLD queries on every interface with AF_PACKET sockets.

An IP raw socket (IPPROTO_IGMP) would only see queries that survived rp_filter;
a packet socket sees them before the IP layer judges them, which is the point.
"""

from __future__ import annotations

import selectors
import socket
import time
from collections.abc import Callable

from .._errors import RawAccessError

__all__ = ["CaptureUnavailable", "capture_igmp", "capture_queries"]

#: The capture cannot run here (usually: not root and no CAP_NET_RAW).
CaptureUnavailable = RawAccessError


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
    # Linux only (AF_PACKET): imported when a capture runs, never by the CLI's import.
    from .._platform.linux.rawnet import open_watch, read_watch

    families = [socket.AF_INET] + ([socket.AF_INET6] if ipv6 else [])
    socks: list[socket.socket] = []
    try:
        with selectors.DefaultSelector() as sel:
            for family in families:
                sock = open_watch(family)
                socks.append(sock)
                sel.register(sock, selectors.EVENT_READ)
            deadline = clock() + duration
            while (left := deadline - clock()) > 0:
                for key, _ in sel.select(left):
                    for ifname, packet, outgoing in read_watch(key.fileobj):  # type: ignore[arg-type]
                        # This host's own reports, not someone's query.
                        if not outgoing:
                            on_packet(ifname, packet, clock())
    finally:
        for sock in socks:
            sock.close()


def capture_igmp(
    duration: float,
    on_packet: Callable[[str, bytes, float], None],
    *,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """:func:`capture_queries` for IPv4 (IGMP) only."""
    capture_queries(duration, on_packet, ipv6=False, clock=clock)
