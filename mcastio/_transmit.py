"""Where a datagram is sent: one transmit socket per interface, and the sends over them.

``IP_MULTICAST_IF`` takes one interface per socket, so the pool keeps one socket
per interface, shared by every group of the endpoint. A copy that meets a full
socket buffer is retried once the socket drains, after every other interface
already has its copy. A link that refuses sends (:func:`._net.is_link_refusal`)
is reported once, then left out of ``send_all`` until it changes.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket
from collections.abc import Callable, Sequence

from . import _net, _sendmany
from ._errors import EndpointClosedError, MulticastError
from ._fastpath import OkResults
from ._model import MAX_PAYLOAD_V4, MAX_PAYLOAD_V6, Group, Interface, SendResult, validate_payload
from ._onlink import UnicastRoute
from ._origin import NO_ORIGIN, Origin
from ._sendmany import BatchSendResult, GsoState, Payload
from ._sendto import send_unicast

__all__ = ["TransmitPool"]

_log = logging.getLogger("mcastio")

# A bytes payload up to this size is valid for every group, so send_all skips the checks.
_FITS_ANY_GROUP = min(MAX_PAYLOAD_V4, MAX_PAYLOAD_V6)
# Copies sent by the awaitable sends between two yields to the event loop (~1 ms):
# a sendto into a buffer with room never blocks, so a tight ``await send_all()``
# loop would otherwise starve the watcher, the readers and every other task.
_COPIES_PER_YIELD = 256


class _Sender:
    """One interface's transmit socket."""

    __slots__ = ("gso", "iface", "ok", "send", "tx", "writable")

    def __init__(self, iface: Interface, tx: socket.socket) -> None:
        self.tx = tx
        self.gso = GsoState()
        # Set while a send waits for this socket to drain (see _send_when_writable).
        self.writable: asyncio.Future[None] | None = None
        self.update(iface, tx)

    def update(self, iface: Interface, tx: socket.socket | None = None) -> None:
        self.iface = iface
        if tx is not None:
            self.tx = tx
            self.gso = GsoState()
        # Bound once here, not looked up on every send: send_all is measured
        # against bare sendto calls.
        self.send = self.tx.sendto
        self.ok = OkResults(iface.name)


SocketHook = Callable[[socket.socket], None]


def _ignore(sock: socket.socket) -> None:
    return None


class TransmitPool:
    """The transmit sockets of one endpoint, by interface index.

    With ``from_group_port`` every copy leaves from the group's port and the sockets
    receive nothing; otherwise each socket has a port of its own, and the owner is
    told when one opens or closes (``on_open``/``on_close``) so it can read replies.
    """

    def __init__(
        self,
        group: Group,
        port: int,
        ttl: int,
        loopback: bool,
        *,
        from_group_port: bool = False,
        on_open: SocketHook = _ignore,
        on_close: SocketHook = _ignore,
        origin: Origin = NO_ORIGIN,
    ) -> None:
        self._group = group
        # The TOS byte, source address and fixed port every socket of the pool takes.
        self._origin = origin
        self._port = port
        self._ttl = ttl
        self._loopback = loopback
        self._bind_port = port if from_group_port else None
        # Sockets bound to the group's port receive nothing: no replies to read.
        self._on_open = _ignore if from_group_port else on_open
        self._on_close = _ignore if from_group_port else on_close
        self._dest: tuple[str, int] | None = (str(group), port)
        self._dests: dict[str, tuple[str, int]] = {str(group): self._dest}
        # The packed sockaddr of each group, as sendmmsg takes it (send_many).
        self._addresses: dict[tuple[str, int], bytes] = {
            self._dest: _sendmany.sockaddr(group, port)
        }
        self._senders: dict[int, _Sender] = {}
        # Links whose sends were refused: out of send_all until they change (retry()).
        self._parked: dict[int, tuple[_Sender, OSError]] = {}
        self._to_park: list[tuple[_Sender, OSError]] = []
        # A live view, kept so the send path skips one method call per datagram.
        self._view = self._senders.values()
        self._loop: asyncio.AbstractEventLoop | None = None
        # Copies the awaitable sends may still make before they yield once.
        self._until_yield = _COPIES_PER_YIELD
        #: "new", "open" or "closed", set by the owner: sends need an open endpoint.
        self.state = "new"

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.state = "open"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.iface.name for s in self._view)

    @property
    def refused(self) -> dict[str, OSError]:
        """Interfaces left out of ``send_all`` because their sends were refused, and why."""
        return {sender.iface.name: error for sender, error in self._parked.values()}

    def set_groups(self, groups: Sequence[Group]) -> None:
        """The groups sends may name; a call that names none needs exactly one."""
        self._dests = {str(g): (str(g), self._port) for g in groups}
        self._dest = next(iter(self._dests.values())) if len(self._dests) == 1 else None
        self._addresses = {(str(g), self._port): _sendmany.sockaddr(g, self._port) for g in groups}

    def _dest_for(self, group: str | None) -> tuple[str, int]:
        if group is None:
            if self._dest is None:
                raise ValueError(
                    f"this endpoint has {len(self._dests)} groups "
                    f"({', '.join(self._dests)}): name one with group="
                )
            return self._dest
        dest = self._dests.get(group)
        if dest is None:
            try:
                dest = self._dests.get(str(ipaddress.ip_address(group)))
            except ValueError:
                dest = None
        if dest is None:
            raise ValueError(
                f"{group!r} is not one of this endpoint's groups ({', '.join(self._dests)})"
            )
        return dest

    # -- the pool ------------------------------------------------------------------

    def open(self, iface: Interface) -> None:
        """A transmit socket for ``iface``; raises MulticastError when it cannot be made."""
        self._senders[iface.index] = _Sender(iface, self._open_socket(iface))

    def replace(self, iface: Interface) -> None:
        """A fresh socket for a changed interface; the old one stays if that fails."""
        sender = self._sender(iface.index)
        tx = self._open_socket(iface)
        self._close_socket(sender)
        sender.update(iface, tx)

    def refresh(self, iface: Interface) -> None:
        """New details for an interface whose socket stays valid."""
        self._sender(iface.index).update(iface)

    def _sender(self, index: int) -> _Sender:
        parked = self._parked.get(index)
        return parked[0] if parked is not None else self._senders[index]

    def retry(self, index: int) -> None:
        """The interface changed: send on it again if its sends were refused."""
        parked = self._parked.pop(index, None)
        if parked is not None:
            self._senders[index] = parked[0]
            _log.info("trying %s again: it changed", parked[0].iface.name)

    def close(self, index: int) -> None:
        sender = self._senders.pop(index, None)
        parked = self._parked.pop(index, None)
        if parked is not None:
            sender = parked[0]
        if sender is not None:
            self._close_socket(sender)

    def close_all(self) -> None:
        self.state = "closed"
        for sender in [*self._view, *(p[0] for p in self._parked.values())]:
            self._close_socket(sender)
        self._senders.clear()
        self._parked.clear()

    def _open_socket(self, iface: Interface) -> socket.socket:
        tx = _net.open_sender(
            self._group,
            iface,
            self._ttl,
            self._loopback,
            group_port=self._bind_port,
            origin=self._origin,
        )
        self._on_open(tx)
        return tx

    def _close_socket(self, sender: _Sender) -> None:
        """Close a transmit socket, first waking anyone waiting for it to drain."""
        if sender.writable is not None and self._loop is not None:
            # Unregister before close: a later socket may reuse the descriptor number.
            self._on_writable(sender)
        self._on_close(sender.tx)
        sender.tx.close()

    # -- sending -------------------------------------------------------------------

    def _check_send(self, data: object) -> bytes | bytearray | memoryview:
        if self.state != "open":
            raise EndpointClosedError(
                "cannot send on an endpoint that is not open"
                + (" (it was closed)" if self.state == "closed" else "; await start() first")
            )
        return validate_payload(data, self._group)

    def send_all_nowait(
        self, data: bytes | bytearray | memoryview, group: str | None = None
    ) -> tuple[SendResult, ...]:
        # The hot send path: written out flat, since every call here costs
        # measurably against a single sendto.
        if self.state != "open" or type(data) is not bytes or len(data) > _FITS_ANY_GROUP:
            data = self._check_send(data)
        dest = self._dest
        if group is not None or dest is None:
            dest = self._dest_for(group)
        results: list[SendResult] = []
        for sender in self._view:
            try:
                results.append(sender.ok[sender.send(data, dest)])
            except OSError as exc:
                results.append(SendResult(sender.iface.name, exc))
                if _net.is_link_refusal(exc):
                    self._to_park.append((sender, exc))
        if self._to_park:
            self._park(dest)
        return tuple(results)

    def _park(self, dest: tuple[str, int]) -> None:
        """Leave out the links just refused, each reported once (here and in its result)."""
        for sender, exc in self._to_park:
            index = sender.iface.index
            if self._senders.get(index) is sender:
                del self._senders[index]
                self._parked[index] = (sender, exc)
                _log.warning(
                    "sends to %s:%d on %s fail (%s); leaving %s out until it changes",
                    dest[0],
                    dest[1],
                    sender.iface.name,
                    exc.strerror or exc,
                    sender.iface.name,
                )
        self._to_park.clear()

    async def send_all(
        self, data: bytes | bytearray | memoryview, group: str | None = None
    ) -> tuple[SendResult, ...]:
        results = self.send_all_nowait(data, group)
        for result in results:
            if result.error is not None and isinstance(result.error, BlockingIOError):
                return await self._retry_blocked(results, data, self._dest_for(group))
        self._until_yield -= len(results) or 1
        if self._until_yield <= 0:
            await self._yield()
        return results

    async def _yield(self) -> None:
        self._until_yield = _COPIES_PER_YIELD
        await asyncio.sleep(0)

    async def _retry_blocked(
        self,
        results: tuple[SendResult, ...],
        data: bytes | bytearray | memoryview,
        dest: tuple[str, int],
    ) -> tuple[SendResult, ...]:
        # Called before any await since the round, so the senders are the ones just used.
        # Every other interface already has its copy: a full buffer on one never
        # holds up the others.
        senders = {s.iface.name: s for s in self._view}
        retried = list(results)
        for i, result in enumerate(results):
            if isinstance(result.error, BlockingIOError):
                retried[i] = await self._send_when_writable(senders[result.interface], data, dest)
        return tuple(retried)

    def send_nowait(
        self, data: bytes | bytearray | memoryview, interface: str, group: str | None = None
    ) -> SendResult:
        payload = self._check_send(data)
        return self._send_one(self._named(interface), payload, self._dest_for(group))

    async def send(
        self, data: bytes | bytearray | memoryview, interface: str, group: str | None = None
    ) -> SendResult:
        payload = self._check_send(data)
        sender = self._named(interface)
        dest = self._dest_for(group)
        result = self._send_one(sender, payload, dest)
        if isinstance(result.error, BlockingIOError):
            result = await self._send_when_writable(sender, payload, dest)
        else:
            self._until_yield -= 1
            if self._until_yield <= 0:
                await self._yield()
        if result.error is not None:
            raise MulticastError(
                f"sending to {dest[0]}:{self._port} on {interface} failed: {result.error}"
            ) from result.error
        return result

    # -- unicast -------------------------------------------------------------------

    def send_unicast_nowait(
        self, data: bytes | bytearray | memoryview, route: UnicastRoute
    ) -> SendResult:
        """One datagram to one host, from the route's interface's transmit socket."""
        payload = self._check_send(data)
        return self._unicast_one(self._named(route.interface), payload, route)

    async def send_unicast(
        self, data: bytes | bytearray | memoryview, route: UnicastRoute
    ) -> SendResult:
        payload = self._check_send(data)
        sender = self._named(route.interface)
        result = self._unicast_one(sender, payload, route)
        if isinstance(result.error, BlockingIOError):
            result = await self._send_when_writable(sender, payload, route)
        if result.error is not None:
            host, port = route.destination[:2]
            raise MulticastError(
                f"sending to {host} port {port} on {route.interface} failed: {result.error}"
            ) from result.error
        return result

    def _unicast_one(
        self, sender: _Sender, payload: bytes | bytearray | memoryview, route: UnicastRoute
    ) -> SendResult:
        try:
            sent = send_unicast(sender.tx, payload, route.destination, route.ifindex, route.source)
        except OSError as exc:
            return SendResult(sender.iface.name, exc)
        return SendResult(sender.iface.name, None, sent)

    def _named(self, interface: str) -> _Sender:
        # A link left out of send_all is still tried when named: the caller asks for it.
        for sender in [*self._view, *(p[0] for p in self._parked.values())]:
            if sender.iface.name == interface:
                return sender
        current = ", ".join(self.names) or "none"
        raise ValueError(
            f"{interface!r} is not one of this endpoint's interfaces (current: {current})"
        )

    def _send_one(
        self, sender: _Sender, payload: bytes | bytearray | memoryview, dest: tuple[str, int]
    ) -> SendResult:
        try:
            sent = sender.tx.sendto(payload, dest)
        except OSError as exc:
            return SendResult(sender.iface.name, exc)
        # A named send that went through on a left-out link: it works again.
        if sender.iface.index in self._parked:
            self.retry(sender.iface.index)
        return SendResult(sender.iface.name, None, sent)

    async def send_many(
        self, payloads: Sequence[Payload], interface: str | None, group: str | None = None
    ) -> tuple[BatchSendResult, ...]:
        """Every payload, in order, out of every interface (or the named one)."""
        if self.state != "open":
            self._check_send(b"")  # raises EndpointClosedError
        dest = self._dest_for(group)
        checked = [
            p if type(p) is bytes and len(p) <= _FITS_ANY_GROUP else self._check_send(p)
            for p in payloads
        ]
        senders = [self._named(interface)] if interface is not None else list(self._view)
        # First every interface as far as its buffer takes; then the blocked ones.
        reached = [self._push(sender, checked, 0, dest) for sender in senders]
        results = []
        for sender, (at, error) in zip(senders, reached, strict=True):
            while isinstance(error, BlockingIOError):
                error = await self._writable(sender)
                if error is None:
                    at, error = self._push(sender, checked, at, dest)
            results.append(BatchSendResult(sender.iface.name, at, error))
        self._until_yield -= sum(r.sent for r in results) or 1
        if self._until_yield <= 0:
            await self._yield()
        return tuple(results)

    def _push(
        self, sender: _Sender, payloads: list[Payload], start: int, dest: tuple[str, int]
    ) -> tuple[int, OSError | None]:
        """(index reached, the error that stopped it or None)."""
        address = self._addresses[dest]
        try:
            at = _sendmany.push(sender.tx, payloads, start, address, dest, sender.gso)
        except OSError as exc:
            return start, exc
        if at < len(payloads):
            return at, BlockingIOError(errno.EAGAIN, "the socket buffer is full")
        return at, None

    async def _writable(self, sender: _Sender) -> OSError | None:
        """Wait until ``sender``'s socket takes more; None, or why it never will."""
        assert self._loop is not None
        name = sender.iface.name
        tx = sender.tx
        if tx.fileno() == -1:
            return _net.gone_error(name)
        waiter = sender.writable
        if waiter is None:
            # asyncio keeps one writer per descriptor: concurrent senders share it.
            waiter = sender.writable = self._loop.create_future()
            self._loop.add_writer(tx.fileno(), self._on_writable, sender)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), 1.0)
        except asyncio.TimeoutError:
            return _net.still_full_error()
        if sender.tx is not tx or tx.fileno() == -1:
            return _net.gone_error(name)
        return None

    async def _send_when_writable(
        self,
        sender: _Sender,
        payload: bytes | bytearray | memoryview,
        dest: tuple[str, int] | UnicastRoute,
    ) -> SendResult:
        error = await self._writable(sender)
        if error is not None:
            return SendResult(sender.iface.name, error)
        if isinstance(dest, UnicastRoute):
            return self._unicast_one(sender, payload, dest)
        return self._send_one(sender, payload, dest)

    def _on_writable(self, sender: _Sender) -> None:
        assert self._loop is not None
        self._loop.remove_writer(sender.tx.fileno())
        waiter, sender.writable = sender.writable, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
