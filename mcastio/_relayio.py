"""The relay's sockets besides its endpoints: one per pending request, and the unicast seam.

A request that left its sender from a port other than the group's (an SSDP
M-SEARCH, an mDNS legacy-unicast query, a WS-Discovery Probe) is answered by
unicast to whoever sent the copy: here, a socket of the relay's own per
(requester, outgoing link), so every answer it reads belongs to one requester.
Answers go back out of the requester's link through the endpoint's ``send_to``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

from . import _net, _txnet
from ._errors import MulticastError
from ._model import Group, Interface

__all__ = ["AnswerSocket"]

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
        self.sock = _txnet.open_sender(group, iface, ttl, False)
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
