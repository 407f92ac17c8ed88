"""The portable path's receive sockets of one endpoint, kept per interface.

Where the kernel gives no arrival interface per datagram (capabilities'
``datagram_interface`` False: Windows, and ``MCASTIO_PORTABLE=1``), the socket a
datagram was read on has to say which interface it came in on. So each interface
in use gets sockets of its own, as :func:`._platform.portable.plan_receive` plans
them, and every change of interfaces or groups moves from the sockets held to
the sockets planned with :func:`._platform.portable.plan_changes`. An interface
holds every planned socket or none (all-or-nothing per interface); a group added
is opened on every interface in use or on none.

The owner is told when a socket opens or closes, as with :mod:`._membership`;
``items`` (shared with :class:`._receive.ReceivePath`) says what each socket is,
so the receive path names its datagrams' interface and group.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterable, Sequence

from ._errors import MulticastError
from ._model import Group, Interface
from ._platform.portable import ReceiveSocket, plan_changes, plan_receive
from ._platform.portable_sockets import open_receive

__all__ = ["PortableJoins"]

_log = logging.getLogger("mcastio")

SocketHook = Callable[[socket.socket], None]


class PortableJoins:
    """The receive sockets of the portable path, per interface index."""

    def __init__(
        self,
        port: int,
        sources: Sequence[str],
        *,
        platform: str,
        on_open: SocketHook,
        on_close: SocketHook,
        items: dict[socket.socket, ReceiveSocket],
    ) -> None:
        self._port = port
        self._sources = tuple(sources)
        self._platform = platform
        self._on_open = on_open
        self._on_close = on_close
        self._items = items
        self._held: dict[int, dict[ReceiveSocket, socket.socket]] = {}
        self._interfaces: dict[int, Interface] = {}

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return tuple(s for held in self._held.values() for s in held.values())

    def holds(self, index: int) -> bool:
        return index in self._held

    def socket_of(self, group: Group, index: int) -> socket.socket | None:
        """The socket holding ``group`` on interface ``index``, if any."""
        for item, sock in self._held.get(index, {}).items():
            if group in item.groups:
                return sock
        return None

    def join(self, iface: Interface, groups: Sequence[Group]) -> None:
        """Open every socket ``groups`` need on ``iface``, or (raising) none."""
        if iface.index in self._held:
            self.leave(iface)
        wanted = plan_receive((iface,), groups, platform=self._platform)
        self._held[iface.index] = self._open_all(wanted)
        self._interfaces[iface.index] = iface

    def leave(self, iface: Interface) -> None:
        """Close the sockets of ``iface``: the kernel drops their memberships."""
        self._interfaces.pop(iface.index, None)
        for sock in self._held.pop(iface.index, {}).values():
            self._close(sock)

    def regroup(self, groups: Sequence[Group], interfaces: Iterable[Interface] = ()) -> None:
        """Hold ``groups`` on the interfaces held and on ``interfaces`` from now on.

        Every socket a group needs is opened first, on every interface, or (raising)
        none is and nothing changes; only then are the sockets no longer planned
        closed.
        """
        changes = []
        every = {**self._interfaces, **{i.index: i for i in interfaces}}
        try:
            for iface in every.values():
                held = self._held.get(iface.index, {})
                wanted = plan_receive((iface,), groups, platform=self._platform)
                opened, closed = plan_changes(tuple(held), wanted)
                changes.append((iface, self._open_all(opened), closed))
        except BaseException:
            for _, new, _ in changes:
                for sock in new.values():
                    self._close(sock)
            raise
        for iface, new, closed in changes:
            held = self._held.setdefault(iface.index, {})
            self._interfaces[iface.index] = iface
            for item in closed:
                self._close(held.pop(item))
            held.update(new)

    def close(self) -> None:
        for held in self._held.values():
            for sock in held.values():
                self._close(sock)
        self._held.clear()
        self._interfaces.clear()

    def _open_all(self, items: Iterable[ReceiveSocket]) -> dict[ReceiveSocket, socket.socket]:
        done: dict[ReceiveSocket, socket.socket] = {}
        try:
            for item in items:
                sock = open_receive(
                    item, self._port, platform=self._platform, sources=self._sources
                )
                # Known before it is watched: its first read names its interface.
                self._items[sock] = item
                try:
                    self._on_open(sock)
                except BaseException:
                    self._items.pop(sock, None)
                    sock.close()
                    raise
                done[item] = sock
        except BaseException as exc:
            # Closing the sockets drops every membership made on this interface.
            for sock in done.values():
                self._close(sock)
            if isinstance(exc, OSError):
                raise MulticastError(f"cannot receive on the portable path: {exc}") from exc
            raise
        return done

    def _close(self, sock: socket.socket) -> None:
        self._items.pop(sock, None)
        try:
            self._on_close(sock)
        finally:
            sock.close()
