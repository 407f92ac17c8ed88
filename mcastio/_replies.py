"""Where a reply is read: unicast sent back to a transmit socket, e.g. answers to a query.

A request sent with ``send_all`` leaves each interface from that interface's
transmit socket, on a port of its own; a responder that answers by unicast (mDNS
legacy unicast, SSDP, WS-Discovery) sends to that port. Replies go to the same
sinks as group traffic, with ``group=None`` and the arrival interface. They are
read with recvmmsg like group traffic where the receive path has it.
"""

from __future__ import annotations

import logging
import socket

from . import _net
from ._model import Datagram
from ._receive import DRAIN_BUDGET, ReceivePath

__all__ = ["Replies"]

_log = logging.getLogger("mcastio")


class Replies:
    """Reads the transmit sockets; counts what it delivered."""

    def __init__(self, receive: ReceivePath) -> None:
        self._receive = receive
        self.count = 0

    def drain(self, sock: socket.socket) -> int:
        """Read the replies waiting on ``sock``, hand them on; the datagrams read."""
        receive = self._receive
        batch: list[Datagram] = []
        read = 0
        if receive.fast:
            batch, read = receive.read_replies(sock)
        if not receive.fast:
            more, more_read = self._read_recvmsg(sock)
            batch += more
            read += more_read
        if batch:
            self.count += len(batch)
            for sink in receive.sinks:
                sink(batch)
        return read

    def _read_recvmsg(self, sock: socket.socket) -> tuple[list[Datagram], int]:
        receive = self._receive
        names = receive.names
        batch: list[Datagram] = []
        read = 0
        # As many per readiness event as the receive path drains: replies share its sinks.
        while read < DRAIN_BUDGET:
            try:
                data, anc, flags, source = sock.recvmsg(_net.RECV_BUFSIZE, _net.ANC_BUFSIZE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                _log.warning("receive error on a transmit socket: %s", exc)
                break
            read += 1
            if flags & _net.MSG_TRUNC:
                receive.truncated += 1
                continue
            info = _net.parse_pktinfo(anc)
            name = names.get(info[0]) if info is not None else None
            if name is None:
                # From a link the endpoint does not use (possible only where the socket
                # could not be bound to its device): not delivered.
                receive.not_for_group += 1
                continue
            batch.append(Datagram(data, source, None, name))
        return batch, read
