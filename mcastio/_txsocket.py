"""Transmit sockets, and the ones the endpoints of one event loop share.

A transmit socket is fixed by its interface (index, and the IPv4 source it names)
and by :class:`SendOptions`: the family, TTL, loopback and the port copies leave
from. Every socket-level send option is a field of that one frozen value, and the
socket is built from it alone, so a new option is part of the sharing key by
construction.

Sharing is decided by who reads what comes back (docs/explanation/design.md):
a socket on a port of its own ("ephemeral") receives the unicast replies to what
it sent, and a reply names only that port, never the endpoint that asked. Such a
socket stays private to its endpoint, and is one socket for all of the endpoint's
interfaces, each send naming its interface by pktinfo (:mod:`._txnet`). A socket
bound to the group's port
("group" mode) receives nothing at all (see :func:`._txnet.open_sender`), so any
number of endpoints, and groups, can send through it: the registry of the loop
hands out one per (interface, :class:`SendOptions`), counts its users, and closes
it with the last. The portable profile has no per-datagram interface
(``capabilities().pinned_send`` False): its endpoints hold a private socket per
interface instead, each reading the replies to what it sent.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from . import _net, _txnet
from ._errors import MulticastError
from ._model import Group, Interface, tx_source
from ._options import EndpointOptions
from ._origin import NO_ORIGIN, Origin
from ._perloop import PerLoop
from ._platform import capabilities

__all__ = ["SendOptions", "SharedSockets", "TxSocket", "shared_sockets"]


@dataclass(frozen=True, slots=True)
class SendOptions:
    """Everything a transmit socket is built from, besides its interface."""

    family: socket.AddressFamily
    ttl: int
    loopback: bool
    #: Copies leave from this port (``source_port="group"``), or None: a port of its own.
    group_port: int | None
    #: The TOS byte, source address and fixed port of its own (:class:`._origin.Origin`).
    origin: Origin = NO_ORIGIN
    #: Only the options every OS has, a socket per interface (the portable profile).
    portable: bool = False

    @classmethod
    def of(cls, options: EndpointOptions) -> SendOptions:
        """The send options of an endpoint; MulticastError where the platform has none such."""
        caps = capabilities()
        group_port = options.port if options.source_port == "group" else None
        if group_port is not None and caps.platform == "windows":
            # Winsock's bind() takes only a local address (WSAEADDRNOTAVAIL otherwise:
            # Microsoft's "bind function (winsock.h)"); never run here.
            raise MulticastError(
                "source_port='group' is not available on Windows: it binds each transmit "
                "socket to the group's address, and Winsock binds only local addresses "
                "(docs/explanation/platforms.md)"
            )
        return cls(
            family=options.group.family,
            ttl=options.ttl,
            loopback=options.loopback,
            group_port=group_port,
            origin=options.origin,
            portable=not caps.pinned_send,
        )

    @property
    def shareable(self) -> bool:
        """Whether endpoints may share the socket: only if it reads no replies."""
        return self.group_port is not None

    @property
    def pinned(self) -> bool:
        """One socket serves every interface, each send naming its own (it reads replies)."""
        return self.group_port is None and not self.portable

    def pin(self, iface: Interface) -> _txnet.Pin | None:
        """What each send out of ``iface`` carries: its pktinfo, or None (the socket's own)."""
        return _txnet.pin(self.family, iface, self.origin) if self.pinned else None

    @property
    def per_interface(self) -> bool:
        """A private socket per interface, reading its replies (the portable profile)."""
        return self.portable and self.group_port is None

    def repoint(self, sock: socket.socket, iface: Interface) -> None:
        """Point a socket of :attr:`per_interface` at ``iface``'s new address."""
        _txnet.repoint(sock, iface, self.origin)

    def moved(self, group: Group, sock: socket.socket, iface: Interface) -> bool:
        """Whether a socket of :attr:`per_interface` with a fixed port must be re-opened.

        It is bound to its interface's address (:func:`._txnet.fixed_port_sockaddr`):
        once that address is gone it neither sends from the interface nor reads the
        replies to it. MulticastError when the interface has no address left.
        """
        want = self.bind_address(group, iface)
        return want is not None and not _txnet.bound_to(sock, want)

    def bind_address(
        self, group: Group, iface: Interface
    ) -> tuple[str, int] | tuple[str, int, int, int] | None:
        """Where a socket for ``iface`` binds, when that is its own address (else None)."""
        if not self.per_interface:
            return None
        return _txnet.fixed_port_sockaddr(group, iface, self.origin)

    def held_elsewhere(
        self, group: Group, iface: Interface, held: Iterable[tuple[str, socket.socket]]
    ) -> MulticastError | None:
        """Why ``iface``'s socket could not bind, when another interface's holds its address.

        A fixed port binds each interface's own address (:meth:`bind_address`): two
        interfaces sharing an address would need one (address, port) twice, which no
        OS gives out. Looked up only once a bind failed, among ``held``: (name, socket).
        """
        try:
            want = self.bind_address(group, iface)
        except MulticastError:
            return None
        if want is None:
            return None
        for name, sock in held:
            if _txnet.bound_to(sock, want):
                return MulticastError(
                    f"{iface.name} has the address {want[0]} of {name}, whose transmit "
                    f"socket holds source port {want[1]} on it: a fixed source port binds "
                    "each interface's own address on this platform, so of two interfaces "
                    "sharing an address one can send from it (select one)"
                )
        return None

    def open(self, group: Group, iface: Interface) -> socket.socket:
        """A new socket with these options; MulticastError if it cannot be made.

        A pinned socket names no interface: ``iface`` only scopes a link-local source.
        """
        if self.pinned:
            return _txnet.open_pinned_sender(
                group, iface, self.ttl, self.loopback, origin=self.origin
            )
        # Every field but the family (the group's) is passed: a test holds the two
        # lists equal, so an option cannot reach the socket without joining the key.
        return _txnet.open_sender(
            group,
            iface,
            self.ttl,
            self.loopback,
            group_port=self.group_port,
            origin=self.origin,
            portable=self.portable,
        )


@dataclass(frozen=True, slots=True)
class SharedKey:
    options: SendOptions
    index: int
    #: What of the interface the socket names besides its index (its IPv4 source).
    source: object


class TxSocket:
    """One transmit socket, with what its users share: the wait for room."""

    __slots__ = ("_room", "key", "sock", "users")

    def __init__(self, sock: socket.socket, key: SharedKey | None = None) -> None:
        self.sock = sock
        self.key = key
        self.users = 1
        # Set while a send waits for the socket to drain; one per descriptor, since
        # asyncio keeps one writer per descriptor: every waiting user shares it.
        self._room: asyncio.Future[None] | None = None

    @property
    def closed(self) -> bool:
        return self.sock.fileno() == -1

    async def room(self, loop: asyncio.AbstractEventLoop, name: str) -> OSError | None:
        """Wait until the socket takes more; None, or why it never will."""
        if self.closed:
            return _net.gone_error(name)
        waiter = self._room
        if waiter is None:
            waiter = self._room = loop.create_future()
            loop.add_writer(self.sock.fileno(), self._wake)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), 1.0)
        except asyncio.TimeoutError:
            return _net.still_full_error()
        return _net.gone_error(name) if self.closed else None

    def _wake(self) -> None:
        waiter, self._room = self._room, None
        if waiter is not None:
            waiter.get_loop().remove_writer(self.sock.fileno())
            if not waiter.done():
                waiter.set_result(None)

    def close(self) -> None:
        # Unregister before close: a later socket may reuse the descriptor number.
        self._wake()
        self.sock.close()


class SharedSockets:
    """The shareable transmit sockets of one event loop, by (interface, options)."""

    def __init__(self) -> None:
        self._open: dict[SharedKey, TxSocket] = {}

    def __len__(self) -> int:
        return len(self._open)

    def acquire(self, options: SendOptions, group: Group, iface: Interface) -> TxSocket:
        """The socket for ``iface`` with ``options``, opened if none is; one more user."""
        key = SharedKey(options, iface.index, tx_source(iface, options.family))
        tx = self._open.get(key)
        if tx is None:
            # Bound to the first user's group: the socket receives nothing either way,
            # and a socket bound to a group address picks its source by the device.
            tx = self._open[key] = TxSocket(options.open(group, iface), key)
        else:
            tx.users += 1
        return tx

    def release(self, tx: TxSocket) -> None:
        """One user fewer; the last closes the socket."""
        tx.users -= 1
        if tx.users > 0:
            return
        if tx.key is not None and self._open.get(tx.key) is tx:
            del self._open[tx.key]
        tx.close()


# Per loop: a socket waits for room through its loop's writer. The registry holds
# no reference to the loop, so a loop dropped with sockets still open is collected.
shared_sockets: PerLoop[SharedSockets] = PerLoop(lambda _loop: SharedSockets())
