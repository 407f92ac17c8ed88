"""The plain ``recvmsg`` drain: one datagram per system call, its pktinfo parsed once.

Where libc lacks ``recvmmsg``, the kernel refuses it, or ``MCASTIO_RECVMMSG=0``.
:class:`._receive.ReceivePath` inherits it; the recvmmsg drains live there.
"""

from __future__ import annotations

import logging
import socket
import sys
from collections.abc import Callable

from . import _net
from ._fastpath import DATAGRAM_SLOT_SETTERS
from ._model import Datagram
from ._platform.linux import ancillary as _ancillary
from ._platform.linux import receiver as _receiver

__all__ = ["DRAIN_BUDGET", "KernelDrops", "RecvmsgDrain", "index_to_name", "socket_drops"]

_log = logging.getLogger("mcastio")

#: Datagrams read per drain before yielding to other tasks: large enough to
#: amortise the event-loop turn, small enough not to starve consumers.
DRAIN_BUDGET = 256
# Distinct arrival ancillary blocks remembered per endpoint (one per interface and
# destination in practice); the cache is emptied when it would grow past this.
_ARRIVALS_LIMIT = 1024
# What the recvmsg drain remembers for an arrival not sent to one of the groups.
_NOT_ARRIVED = (-1, "")


def index_to_name(index: int) -> str:
    try:
        return socket.if_indextoname(index)
    except OSError:
        return f"if{index}"


def socket_drops(sock: socket.socket) -> int | None:
    """Datagrams the kernel has dropped on ``sock`` so far, or None where it cannot say."""
    # The counter behind EndpointStats.kernel_dropped is Linux's (SO_MEMINFO); another
    # OS would read a different option under that number.
    if not sys.platform.startswith("linux"):
        return None
    return _receiver.socket_drops(sock)


class KernelDrops:
    """Datagrams the kernel dropped on each receive socket because its buffer was full.

    Read with SO_MEMINFO when asked (:attr:`total`, and as a socket closes), so the
    drains pay nothing per datagram; SO_RXQ_OVFL reports (:meth:`report`) count
    only where a socket asked for them (:data:`._platform.linux.receiver.STAMP_DROPS`,
    or Linux < 4.6).
    """

    __slots__ = ("_by_socket", "_retired")

    def __init__(self) -> None:
        # The running count per open socket, and the final counts of sockets closed since.
        self._by_socket: dict[socket.socket, int] = {}
        self._retired = 0

    @property
    def total(self) -> int:
        for sock in self._by_socket:
            self._refresh(sock)
        return self._retired + sum(self._by_socket.values())

    def watch(self, sock: socket.socket) -> None:
        """Account for ``sock``'s drops from now on."""
        self._by_socket.setdefault(sock, 0)

    def forget(self, sock: socket.socket) -> None:
        """``sock`` is closing: keep its drop count in the total."""
        if sock in self._by_socket:
            self._refresh(sock)
            self._retired += self._by_socket.pop(sock)

    def report(self, sock: socket.socket, count: int) -> None:
        """The running count an SO_RXQ_OVFL control message carried."""
        if count > self._by_socket.get(sock, 0):
            self._by_socket[sock] = count

    def _refresh(self, sock: socket.socket) -> None:
        # Never below what SO_RXQ_OVFL reported: where SO_MEMINFO is missing it is None.
        now = socket_drops(sock)
        if now is not None:
            self.report(sock, now)


class RecvmsgDrain:
    """The recvmsg drain of a :class:`._receive.ReceivePath`, which sets these."""

    _group_str: str
    _port: int
    _arrivals: dict[tuple[int, int, bytes], tuple[int, str]]
    _wire_groups: dict[str, str]
    holds: dict[socket.socket, set[int]] | None
    truncated: int
    not_for_group: int
    drops: KernelDrops
    names: dict[int, str]
    _hand_on: Callable[[list[Datagram]], None]

    def _drain_recvmsg(self, sock: socket.socket) -> int:
        batch: list[Datagram] = []
        append = batch.append
        recvmsg = sock.recvmsg
        bufsize, ancsize = _net.RECV_BUFSIZE, _net.ANC_BUFSIZE
        truncated = _net.MSG_TRUNC
        names = self.names
        arrivals = self._arrivals
        held = None if self.holds is None else self.holds.get(sock)
        new = object.__new__
        set_data, set_source, set_group, set_interface, set_ttl = DATAGRAM_SLOT_SETTERS
        read = 0
        while read < DRAIN_BUDGET:
            try:
                data, anc, flags, source = recvmsg(bufsize, ancsize)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                # An unconnected UDP socket has no peer errors to report; log and move on.
                _log.warning("receive error on %s:%d: %s", self._group_str, self._port, exc)
                break
            read += 1
            if flags & truncated:
                self.truncated += 1
                continue
            # Every datagram that arrives the same way carries the same pktinfo bytes,
            # so they are parsed once and looked up after that.
            ttl = None
            if len(anc) == 1:
                arrival = arrivals.get(anc[0])
                if arrival is None:
                    arrival = self._learn_arrival(anc[0])
            else:
                arrival, ttl = self._read_ancillary(sock, anc)
            index, group = arrival
            if index < 0 or (held is not None and index not in held):
                self.not_for_group += 1
                continue
            name = names.get(index)
            if name is None:
                name = index_to_name(index)
            dgram = new(Datagram)
            set_data(dgram, data)
            set_source(dgram, source)
            set_group(dgram, group)
            set_interface(dgram, name)
            set_ttl(dgram, ttl)
            append(dgram)
        self._hand_on(batch)
        return read

    def _read_ancillary(
        self, sock: socket.socket, anc: list[tuple[int, int, bytes]]
    ) -> tuple[tuple[int, str], int | None]:
        """((arrival index or -1, group), TTL) from a datagram carrying more than pktinfo."""
        arrival = _NOT_ARRIVED
        for cmsg in anc:
            if _ancillary.is_pktinfo(cmsg[0], cmsg[1]):
                cached = self._arrivals.get(cmsg)
                arrival = self._learn_arrival(cmsg) if cached is None else cached
        ttl, drops = _ancillary.parse_extras(anc)
        if drops is not None:
            self.drops.report(sock, drops)
        return arrival, ttl

    def _arrival_index(self, anc: list[tuple[int, int, bytes]]) -> tuple[int, str]:
        """(arrival ifindex, group), or (-1, "") when not sent to one of the groups."""
        info = _ancillary.parse_pktinfo(anc)
        group = None if info is None else self._wire_groups.get(info[1])
        if info is None or group is None:
            return _NOT_ARRIVED
        return info[0], group

    def _learn_arrival(self, cmsg: tuple[int, int, bytes]) -> tuple[int, str]:
        index = self._arrival_index([cmsg])
        if len(self._arrivals) >= _ARRIVALS_LIMIT:
            self._arrivals.clear()
        self._arrivals[cmsg] = index
        return index
