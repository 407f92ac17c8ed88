"""The relay's sockets besides its endpoints: one per pending request, and the unicast seam.

A request that left its sender from a port other than the group's (an SSDP
M-SEARCH, an mDNS legacy-unicast query, a WS-Discovery Probe) is answered by
unicast to whoever sent the copy: here, a socket of the relay's own per
(requester, outgoing link), so every answer it reads belongs to one requester.
Answers go back out of the requester's link through :class:`UnicastOut`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

from . import _net
from ._errors import MulticastError
from ._model import Group, Interface

__all__ = ["AnswerSocket", "UnicastOut"]

_log = logging.getLogger("mcastio")

# Answers read per readiness event: a responder answers a request with a few.
_READ_BUDGET = 64

Address = tuple[str, int] | tuple[str, int, int, int]


def _drain(sock: socket.socket) -> list[tuple[bytes, Address]]:
    """The whole datagrams waiting on ``sock`` (truncated ones are skipped)."""
    out: list[tuple[bytes, Address]] = []
    for _ in range(_READ_BUDGET):
        try:
            data, _anc, flags, source = sock.recvmsg(_net.RECV_BUFSIZE, _net.ANC_BUFSIZE)
        except (BlockingIOError, InterruptedError):
            break
        except OSError as exc:
            # An unconnected UDP socket has no peer errors to report; log and move on.
            _log.warning("receive error on a relay answer socket: %s", exc)
            break
        if not flags & _net.MSG_TRUNC:
            out.append((data, source))
    return out


class AnswerSocket:
    """Copies of one requester's requests leave ``out`` from here; answers come back here."""

    __slots__ = ("_loop", "_on_answer", "arrival", "iface", "out", "requester", "sock")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        group: Group,
        iface: Interface,
        ttl: int,
        requester: Address,
        arrival: str,
        on_answer: Callable[[AnswerSocket, bytes, Address], None],
    ) -> None:
        self.requester = requester
        self.arrival = arrival
        self.out = iface.name
        #: The interface as it was when the socket was made (its index, its source).
        self.iface = iface
        self._loop = loop
        self._on_answer = on_answer
        self.sock = _net.open_sender(group, iface, ttl, False)
        try:
            loop.add_reader(self.sock.fileno(), self._read)
        except OSError as exc:
            self.sock.close()
            raise MulticastError(f"cannot watch a relay answer socket: {exc}") from exc

    def send(self, data: bytes, dest: Address) -> OSError | None:
        try:
            self.sock.sendto(data, dest)
        except OSError as exc:
            return exc
        return None

    def _read(self) -> None:
        for data, source in _drain(self.sock):
            self._on_answer(self, data, source)

    def close(self) -> None:
        if self.sock.fileno() != -1:
            self._loop.remove_reader(self.sock.fileno())
            self.sock.close()


class UnicastOut:
    """THE SEAM for issue 17b: send unicast out of an interface, from this host's address there.

    Today it keeps one socket per interface (ephemeral port, tied to the device).
    With 17b on main, :meth:`send` becomes
    ``endpoint.send_to(data, dest[0], dest[1], interface=iface.name)`` and the
    sockets here go away.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, group: Group) -> None:
        self._loop = loop
        self._group = group
        self._socks: dict[int, tuple[Interface, socket.socket]] = {}

    def send(self, iface: Interface, data: bytes, dest: Address) -> OSError | None:
        held = self._socks.get(iface.index)
        if held is not None and held[0] != iface:
            # The interface changed address: the old socket's source is stale.
            self._close(iface.index)
            held = None
        try:
            if held is None:
                held = self._open(iface)
            held[1].sendto(data, dest)
        except (OSError, MulticastError) as exc:
            return exc if isinstance(exc, OSError) else OSError(str(exc))
        return None

    def _open(self, iface: Interface) -> tuple[Interface, socket.socket]:
        sock = _net.open_sender(self._group, iface, 1, False)
        try:
            # Nothing should arrive on this port; whatever does is read and discarded
            # so it never fills the buffer.
            self._loop.add_reader(sock.fileno(), _drain, sock)
        except OSError:
            sock.close()
            raise
        held = self._socks[iface.index] = (iface, sock)
        return held

    def _close(self, index: int) -> None:
        held = self._socks.pop(index, None)
        if held is not None:
            self._loop.remove_reader(held[1].fileno())
            held[1].close()

    def keep(self, indexes: set[int]) -> None:
        """Close the sockets of interfaces no longer in use."""
        for index in [i for i in self._socks if i not in indexes]:
            self._close(index)

    def close(self) -> None:
        for index in list(self._socks):
            self._close(index)
