"""Where a join happens: the receive sockets and the group memberships on them.

One socket holds the group on every interface, by index. Only past the kernel's
per-socket cap does a membership spread onto another socket on the same port.
A link-scope IPv6 group is the exception: its socket can be bound to the group only
with a scope id, which ties it to one device, so each interface gets its own.
Nothing here knows about asyncio: the owner is told when a socket opens or
closes, so it can watch it for reading.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Sequence

from . import _net
from ._errors import MembershipLimitError, MulticastError, RawAccessError
from ._model import Group, Interface
from ._platform.linux import receiver as _linuxnet

__all__ = ["Memberships"]

_log = logging.getLogger("mcastio")

SocketHook = Callable[[socket.socket], None]


class _ReceiveSocket:
    """One receive socket and the interface indexes joined on it."""

    __slots__ = ("full", "joined", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.joined: set[int] = set()
        #: The kernel refused a join here (the cap); set until a leave makes room.
        self.full = False


class Memberships:
    """The group joined per interface, spread over as few receive sockets as the cap allows."""

    def __init__(
        self,
        group: Group,
        port: int,
        sources: Sequence[str],
        receive_buffer: int | None,
        *,
        receive_ttl: bool = False,
        on_open: SocketHook,
        on_close: SocketHook,
        holds: dict[socket.socket, set[int]] | None = None,
    ) -> None:
        self._group = group
        # Shared with the receive path, which delivers what a socket read only from
        # the interfaces it holds the group on (IPv6: see _receive.ReceivePath.holds).
        self._holds = holds
        self._port = port
        self._sources = tuple(sources)
        self._receive_buffer = receive_buffer
        self._receive_ttl = receive_ttl
        self._on_open = on_open
        self._on_close = on_close
        self._per_interface = _net.bind_needs_scope(group)
        self._sockets: list[_ReceiveSocket] = []
        # The sockets not known to be at the cap, oldest first: a join tries only
        # these, so a thousand joins over fifty full sockets stay linear, not quadratic.
        self._room: list[_ReceiveSocket] = []
        # Which socket holds each interface's membership.
        self._where: dict[int, _ReceiveSocket] = {}

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return tuple(r.sock for r in self._sockets)

    def __contains__(self, index: int) -> bool:
        return index in self._where

    def socket_of(self, index: int) -> socket.socket | None:
        """The receive socket holding the membership on interface ``index``."""
        receiver = self._where.get(index)
        return receiver.sock if receiver is not None else None

    def join(self, iface: Interface) -> None:
        """Join on ``iface``, on an existing socket below the cap or on a new one."""
        if self._per_interface:
            self._join_new(iface, scope=iface.index)
            return
        while self._room:
            receiver = self._room[0]
            try:
                _linuxnet.join(receiver.sock, self._group, iface, self._sources)
            except MembershipLimitError:
                receiver.full = True
                self._room.pop(0)
                continue
            self._record(receiver, iface.index)
            return
        # Every socket is at the kernel's per-socket cap: spread onto a new one,
        # since datagrams reach only the socket holding the (group, ifindex) membership.
        self._join_new(iface)

    def _join_new(self, iface: Interface, scope: int = 0) -> None:
        receiver = self._open(scope)
        try:
            _linuxnet.join(receiver.sock, self._group, iface, self._sources)
        except MembershipLimitError as exc:
            self._close_if_empty(receiver)
            # Spreading cannot help when an empty socket is refused too.
            raise MulticastError(f"{exc}; even a new socket was refused") from exc
        except BaseException:
            self._close_if_empty(receiver)
            raise
        self._record(receiver, iface.index)

    def leave(self, iface: Interface) -> None:
        """Leave on ``iface``; a failure is logged, since the membership is forgotten anyway."""
        receiver = self._where.pop(iface.index, None)
        if receiver is None:
            return
        receiver.joined.discard(iface.index)
        try:
            _linuxnet.leave(receiver.sock, self._group, iface, self._sources)
        except MulticastError as exc:
            _log.warning("%s", exc)
        self._has_room(receiver)
        self._close_if_empty(receiver)

    def reannounce(self, iface: Interface) -> str:
        """Make the host report its membership on ``iface`` again, never with a Leave.

        A leave and re-join would send a Leave (IGMPv2), a Done (MLDv1) or TO_IN {}
        (v3, when the kernel sends its pending leave before the join cancels it),
        and a fast-leave switch cuts the stream for the whole port at once. Instead:
        with CAP_NET_RAW, the current-state report the kernel itself answers a query
        with (``"report"``); without it, on IGMPv3/MLDv2, a change of the source
        filter, which the kernel reports (``"source-filter"``); on IGMPv2/MLDv1
        without it, nothing (``"none"``: the keeper or a querier must do it).
        The membership stays in place whatever happens.
        """
        # Linux only (raw IGMP/MLD, /proc): imported where the report is sent, so
        # that importing mcastio elsewhere never loads them (mcastio._platform).
        from ._hostreport import host_version, send_report
        from ._platform.linux import rawnet as _rawnet

        receiver = self._where[iface.index]
        v6 = self._group.family == socket.AF_INET6
        try:
            raw = _rawnet.open_raw(self._group.family)
        except RawAccessError:
            raw = None
        if raw is not None:
            # A send-only socket for a rare event (carrier return): nothing to share.
            with raw:
                # Carrier return is rare: the version is read now, not from the cache.
                send_report(raw, iface, self._group, self._sources, fresh=True)
            return "report"
        if host_version(v6, iface.name, fresh=True) >= (2 if v6 else 3):
            _linuxnet.refresh_by_source_filter(receiver.sock, self._group, iface, self._sources)
            return "source-filter"
        return "none"

    def close(self) -> None:
        """Close every receive socket; the kernel drops their memberships and sends the leaves."""
        for receiver in self._sockets:
            self._forget(receiver)
        self._sockets.clear()
        self._room.clear()
        self._where.clear()

    def _has_room(self, receiver: _ReceiveSocket) -> None:
        """A membership left ``receiver``: it takes joins again."""
        if receiver.full:
            receiver.full = False
            self._room.append(receiver)

    def _record(self, receiver: _ReceiveSocket, index: int) -> None:
        receiver.joined.add(index)
        self._where[index] = receiver

    def _open(self, scope: int) -> _ReceiveSocket:
        receiver = _ReceiveSocket(
            _linuxnet.open_receiver(
                self._group,
                self._port,
                self._receive_buffer,
                receive_ttl=self._receive_ttl,
                scope=scope,
            )
        )
        try:
            self._on_open(receiver.sock)
        except BaseException:
            receiver.sock.close()
            raise
        self._sockets.append(receiver)
        if not self._per_interface:
            self._room.append(receiver)
        if self._holds is not None:
            # The live set: joins and leaves show at once.
            self._holds[receiver.sock] = receiver.joined
        return receiver

    def _close_if_empty(self, receiver: _ReceiveSocket) -> None:
        if receiver.joined or receiver not in self._sockets:
            return
        self._sockets.remove(receiver)
        if receiver in self._room:
            self._room.remove(receiver)
        self._forget(receiver)

    def _forget(self, receiver: _ReceiveSocket) -> None:
        if self._holds is not None:
            self._holds.pop(receiver.sock, None)
        self._on_close(receiver.sock)
        receiver.sock.close()
