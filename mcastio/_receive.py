"""Where a datagram is read: drain a receive socket, build each ``Datagram``, hand the batch on.

The socket is drained up to a budget per readiness event; every datagram of the
drain goes to each sink (subscriptions, a protocol) in one list. Datagrams that
reached the port but were not sent to the group are counted, never delivered.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable

from . import _net
from ._fastpath import DATAGRAM_SLOT_SETTERS
from ._model import Datagram, Group

__all__ = ["ReceivePath", "Sink"]

_log = logging.getLogger("mcastio")

Sink = Callable[[list[Datagram]], None]

# Datagrams read per readiness event before yielding to other tasks: large enough
# to amortise the event-loop turn, small enough not to starve consumers.
_DRAIN_BUDGET = 256
# Distinct arrival ancillary blocks remembered per endpoint (one per interface and
# destination in practice); the cache is emptied when it would grow past this.
_ARRIVALS_LIMIT = 1024


def _index_to_name(index: int) -> str:
    try:
        return socket.if_indextoname(index)
    except OSError:
        return f"if{index}"


class ReceivePath:
    """The receive side of one endpoint: counters, the arrival cache and the sinks."""

    def __init__(self, group: Group, port: int) -> None:
        self._group_str = str(group)
        self._port = port
        # The pktinfo destination is compared as inet_ntop text: the same function on
        # both sides keeps the comparison canonical for any spelling of an IPv6 group.
        self._wire_group = socket.inet_ntop(group.family, group.address.packed)
        #: Interface index -> name, for the interfaces in use; set by the owner.
        self.names: dict[int, str] = {}
        # The sinks in two ordered sets (subscriptions ahead of protocols), and the
        # tuple handed out per batch, rebuilt only after a change: closing n
        # subscriptions then costs O(n) instead of one O(n) rebuild per close.
        self._front: dict[Sink, None] = {}
        self._back: dict[Sink, None] = {}
        self._sinks: tuple[Sink, ...] | None = ()
        self.received = 0
        self.not_for_group = 0
        self.truncated = 0
        # The kernel's running drop count per open socket (SO_RXQ_OVFL), and the
        # final counts of sockets closed since.
        self._drops: dict[socket.socket, int] = {}
        self._retired_drops = 0
        self._arrivals: dict[tuple[int, int, bytes], int] = {}

    @property
    def kernel_dropped(self) -> int:
        """Datagrams the kernel dropped on the receive sockets so far."""
        for sock in self._drops:
            self._refresh_drops(sock)
        return self._retired_drops + sum(self._drops.values())

    def watch(self, sock: socket.socket) -> None:
        """Account for ``sock``'s drops from now on."""
        self._drops.setdefault(sock, 0)

    def forget(self, sock: socket.socket) -> None:
        """``sock`` is closing: keep its drop count in the total."""
        if sock in self._drops:
            self._refresh_drops(sock)
            self._retired_drops += self._drops.pop(sock)

    def _refresh_drops(self, sock: socket.socket) -> None:
        now = _net.socket_drops(sock)
        # Never below what SO_RXQ_OVFL reported: where SO_MEMINFO is missing it is None.
        if now is not None and now > self._drops[sock]:
            self._drops[sock] = now

    @property
    def sinks(self) -> tuple[Sink, ...]:
        """Called with every batch; a tuple, so a sink added or removed while a
        batch is handed out does not disturb that loop."""
        sinks = self._sinks
        if sinks is None:
            sinks = self._sinks = self._rebuild_sinks()
        return sinks

    def _rebuild_sinks(self) -> tuple[Sink, ...]:
        return (*self._front, *self._back)

    def add_sink(self, sink: Sink, *, first: bool = False) -> None:
        (self._front if first else self._back)[sink] = None
        self._sinks = None

    def remove_sink(self, sink: Sink) -> None:
        self._front.pop(sink, None)
        self._back.pop(sink, None)
        self._sinks = None

    def clear_sinks(self) -> None:
        self._front.clear()
        self._back.clear()
        self._sinks = ()

    def on_readable(self, sock: socket.socket) -> None:
        batch: list[Datagram] = []
        append = batch.append
        recvmsg = sock.recvmsg
        bufsize, ancsize = _net.RECV_BUFSIZE, _net.ANC_BUFSIZE
        truncated = _net.MSG_TRUNC
        names = self.names
        arrivals = self._arrivals
        group = self._group_str
        new = object.__new__
        set_data, set_source, set_group, set_interface, set_ttl = DATAGRAM_SLOT_SETTERS
        for _ in range(_DRAIN_BUDGET):
            try:
                data, anc, flags, source = recvmsg(bufsize, ancsize)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                # An unconnected UDP socket has no peer errors to report; log and move on.
                _log.warning("receive error on %s:%d: %s", group, self._port, exc)
                break
            if flags & truncated:
                self.truncated += 1
                continue
            # Every datagram that arrives the same way carries the same pktinfo bytes,
            # so they are parsed once and looked up after that.
            ttl = None
            if len(anc) == 1:
                index = arrivals.get(anc[0])
                if index is None:
                    index = self._learn_arrival(anc[0])
            else:
                index, ttl = self._read_ancillary(sock, anc)
            if index < 0:
                self.not_for_group += 1
                continue
            name = names.get(index)
            if name is None:
                name = _index_to_name(index)
            dgram = new(Datagram)
            set_data(dgram, data)
            set_source(dgram, source)
            set_group(dgram, group)
            set_interface(dgram, name)
            set_ttl(dgram, ttl)
            append(dgram)
        if batch:
            self.received += len(batch)
            for sink in self.sinks:
                sink(batch)

    def _read_ancillary(
        self, sock: socket.socket, anc: list[tuple[int, int, bytes]]
    ) -> tuple[int, int | None]:
        """(arrival index or -1, TTL) from a datagram carrying more than pktinfo."""
        index = -1
        for cmsg in anc:
            if _net.is_pktinfo(cmsg[0], cmsg[1]):
                cached = self._arrivals.get(cmsg)
                index = self._learn_arrival(cmsg) if cached is None else cached
        ttl, drops = _net.parse_extras(anc)
        if drops is not None and drops > self._drops.get(sock, 0):
            self._drops[sock] = drops
        return index, ttl

    def _arrival_index(self, anc: list[tuple[int, int, bytes]]) -> int:
        """The arrival ifindex, or -1 when the datagram was not sent to the group."""
        info = _net.parse_pktinfo(anc)
        if info is None or info[1] != self._wire_group:
            return -1
        return info[0]

    def _learn_arrival(self, cmsg: tuple[int, int, bytes]) -> int:
        index = self._arrival_index([cmsg])
        if len(self._arrivals) >= _ARRIVALS_LIMIT:
            self._arrivals.clear()
        self._arrivals[cmsg] = index
        return index
