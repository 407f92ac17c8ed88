"""When a socket is read: as soon as it is readable, or under a flood after a delay.

:class:`SocketReader` runs a drain (any function of one socket that returns how
many datagrams it read: the group receive path, a reply reader) from the event
loop; :class:`._fastpath.Coalescing` decides when reads are deferred.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

from ._fastpath import Coalescing
from ._receive import DRAIN_BUDGET

__all__ = ["Drain", "SocketReader"]

Drain = Callable[[socket.socket], int]


class SocketReader:
    """Runs ``drain`` on one socket: when it is readable, or under a flood after a delay.

    Any socket and any drain (a function of the socket returning how many
    datagrams it read) will do. While a flood is coalesced the socket is not
    watched: a timer runs the drain every ``delay`` seconds until a read finds
    less than a flood's worth, then readiness takes over again.
    """

    __slots__ = (
        "_active",
        "_drain",
        "_fd",
        "_loop",
        "_pacing",
        "_sock",
        "_timer",
        "deferred_reads",
    )

    def __init__(
        self, loop: asyncio.AbstractEventLoop, sock: socket.socket, drain: Drain, delay: float
    ) -> None:
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._drain = drain
        self._pacing = Coalescing(delay)
        self._timer: asyncio.Handle | None = None
        self._active = False
        #: Reads made after a coalescing delay rather than on readiness.
        self.deferred_reads = 0

    @property
    def coalescing(self) -> bool:
        """Whether reads are deferred right now (a flood is being read in batches)."""
        return self._timer is not None

    def start(self) -> None:
        self._active = True
        self._loop.add_reader(self._fd, self._on_readable)

    def stop(self) -> None:
        """Stop reading; call before the socket closes. Idempotent."""
        self._active = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        else:
            self._loop.remove_reader(self._fd)

    def _on_readable(self) -> None:
        read = self._drain(self._sock)
        # A sink may have closed the endpoint, and with it this reader.
        if self._active and self._pacing.after_wakeup(read, self._loop.time()):
            self._loop.remove_reader(self._fd)
            self._timer = self._loop.call_later(self._pacing.delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.deferred_reads += 1
        read = 0
        try:
            read = self._drain(self._sock)
        finally:
            # Even when a sink raised: the socket must not be left unread.
            if self._active:
                wait = self._pacing.after_deferred(read, read >= DRAIN_BUDGET)
                if wait is None:
                    self._loop.add_reader(self._fd, self._on_readable)
                elif wait:
                    self._timer = self._loop.call_later(wait, self._on_timer)
                else:
                    self._timer = self._loop.call_soon(self._on_timer)
