"""The groups of one endpoint, each joined on every interface in use.

One :class:`._membership.Memberships` per group: each group has receive sockets of
its own, bound to that group's address, so unicast to the port is never taken from
another program and no group's datagrams reach another group's socket. The
per-socket cap and the IPv6 option-memory spreading then hold per group too.

An interface in use holds every group, or none (all-or-nothing per interface); a
group added at run time is joined on every interface in use, or on none. A
send-only endpoint (``join=False``) keeps the groups as destinations only and never
touches a membership.

Where the kernel names no arrival interface per datagram (the portable path), the
sockets are :mod:`._portablejoins`' instead: per interface, as the platform plans.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable, Sequence

from ._membership import Memberships
from ._model import Group, Interface
from ._platform.portable import ReceiveSocket
from ._portablejoins import PortableJoins

__all__ = ["GroupMemberships"]

SocketHook = Callable[[socket.socket], None]


class GroupMemberships:
    """The endpoint's groups, and their memberships on each interface in use."""

    def __init__(
        self,
        groups: Sequence[Group],
        port: int,
        sources: Sequence[str],
        receive_buffer: int | None,
        *,
        receive_ttl: bool,
        join: bool,
        on_open: SocketHook,
        on_close: SocketHook,
        holds: dict[socket.socket, set[int]] | None = None,
        portable: tuple[str, dict[socket.socket, ReceiveSocket]] | None = None,
    ) -> None:
        """``portable``: (platform name, the receive path's socket -> plan item), for
        the portable path's sockets."""
        self._holds = holds
        self._port = port
        self._sources = tuple(sources)
        self._receive_buffer = receive_buffer
        self._receive_ttl = receive_ttl
        self.joining = join
        self._on_open = on_open
        self._on_close = on_close
        self._portable: PortableJoins | None = None
        if portable is not None and join:
            platform, items = portable
            self._portable = PortableJoins(
                port, sources, platform=platform, on_open=on_open, on_close=on_close, items=items
            )
        per_group = join and self._portable is None
        # Insertion-ordered: the order the groups were given, then added.
        self._groups: dict[Group, Memberships | None] = {
            g: self._memberships(g) if per_group else None for g in groups
        }

    def _memberships(self, group: Group) -> Memberships:
        return Memberships(
            group,
            self._port,
            self._sources,
            self._receive_buffer,
            receive_ttl=self._receive_ttl,
            on_open=self._on_open,
            on_close=self._on_close,
            holds=self._holds,
        )

    @property
    def groups(self) -> tuple[Group, ...]:
        return tuple(self._groups)

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        """Every group's receive sockets."""
        if self._portable is not None:
            return self._portable.sockets
        return tuple(s for held in self._groups.values() if held is not None for s in held.sockets)

    def __contains__(self, group: Group) -> bool:
        return group in self._groups

    def socket_of(self, group: Group, index: int) -> socket.socket | None:
        """The receive socket holding ``group`` on interface ``index``."""
        if self._portable is not None:
            return self._portable.socket_of(group, index)
        held = self._groups.get(group)
        return held.socket_of(index) if held is not None else None

    # -- per interface ---------------------------------------------------------------

    def join(self, iface: Interface) -> None:
        """Join every group on ``iface``, or (raising) none of them."""
        if self._portable is not None:
            self._portable.join(iface, self.groups)
            return
        done: list[Memberships] = []
        try:
            for held in self._groups.values():
                if held is not None:
                    held.join(iface)
                    done.append(held)
        except BaseException:
            for held in done:
                held.leave(iface)
            raise

    def leave(self, iface: Interface) -> None:
        """Leave every group on ``iface``; failures are logged by each membership."""
        if self._portable is not None:
            self._portable.leave(iface)
        for held in self._groups.values():
            if held is not None:
                held.leave(iface)

    def reannounce(self, iface: Interface) -> list[str]:
        """Make the host report every group held on ``iface`` again, never with a Leave.

        How, per group (see :meth:`Memberships.reannounce`): ``"report"``,
        ``"source-filter"`` or ``"none"``. The memberships stay whatever happens.
        The portable path sends no raw report: ``"none"`` for each group held.
        """
        if self._portable is not None:
            return ["none"] * len(self._groups) if self._portable.holds(iface.index) else []
        return [
            held.reannounce(iface)
            for held in self._groups.values()
            if held is not None and iface.index in held
        ]

    # -- per group -------------------------------------------------------------------

    def add(self, group: Group, interfaces: Iterable[Interface]) -> None:
        """Join ``group`` on every one of ``interfaces``, or (raising) on none."""
        if group in self._groups:
            raise ValueError(f"group {group} is already one of this endpoint's groups")
        if not self.joining:
            self._groups[group] = None
            return
        if self._portable is not None:
            self._portable.regroup((*self._groups, group), interfaces)
            self._groups[group] = None
            return
        held = self._memberships(group)
        try:
            for iface in interfaces:
                held.join(iface)
        except BaseException:
            # Closing the sockets drops every membership made so far.
            held.close()
            raise
        self._groups[group] = held

    def remove(self, group: Group) -> None:
        """Leave ``group`` on every interface and close its receive sockets.

        Whatever the kernel still queued on those sockets is discarded with them.
        """
        if self._portable is not None:
            self._portable.regroup(tuple(g for g in self._groups if g != group))
        held = self._groups.pop(group)
        if held is not None:
            held.close()

    def close(self) -> None:
        if self._portable is not None:
            self._portable.close()
        for held in self._groups.values():
            if held is not None:
                held.close()
