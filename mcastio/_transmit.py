"""Where a datagram is sent: one transmit socket per interface, and the sends over them.

``IP_MULTICAST_IF`` takes one interface per socket, so the pool keeps one socket
per interface. A copy that meets a full socket buffer is retried once the socket
drains, after every other interface already has its copy.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Callable, Sequence

from . import _net, _sendmany
from ._errors import EndpointClosedError, MulticastError
from ._fastpath import OkResults
from ._model import MAX_PAYLOAD_V4, MAX_PAYLOAD_V6, Group, Interface, SendResult, validate_payload
from ._sendmany import BatchSendResult, GsoState, Payload

__all__ = ["TransmitPool"]

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
    ) -> None:
        self._group = group
        self._port = port
        self._ttl = ttl
        self._loopback = loopback
        self._bind_port = port if from_group_port else None
        # Sockets bound to the group's port receive nothing: no replies to read.
        self._on_open = _ignore if from_group_port else on_open
        self._on_close = _ignore if from_group_port else on_close
        self._dest: tuple[str, int] = (str(group), port)
        self._address = _sendmany.sockaddr(group, port)
        self._senders: dict[int, _Sender] = {}
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

    # -- the pool ------------------------------------------------------------------

    def open(self, iface: Interface) -> None:
        """A transmit socket for ``iface``; raises MulticastError when it cannot be made."""
        self._senders[iface.index] = _Sender(iface, self._open_socket(iface))

    def replace(self, iface: Interface) -> None:
        """A fresh socket for a changed interface; the old one stays if that fails."""
        sender = self._senders[iface.index]
        tx = self._open_socket(iface)
        self._close_socket(sender)
        sender.update(iface, tx)

    def refresh(self, iface: Interface) -> None:
        """New details for an interface whose socket stays valid."""
        self._senders[iface.index].update(iface)

    def close(self, index: int) -> None:
        sender = self._senders.pop(index, None)
        if sender is not None:
            self._close_socket(sender)

    def close_all(self) -> None:
        self.state = "closed"
        for sender in self._view:
            self._close_socket(sender)
        self._senders.clear()

    def _open_socket(self, iface: Interface) -> socket.socket:
        tx = _net.open_sender(
            self._group, iface, self._ttl, self._loopback, group_port=self._bind_port
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

    def send_all_nowait(self, data: bytes | bytearray | memoryview) -> tuple[SendResult, ...]:
        # The hot send path: written out flat, since every call here costs
        # measurably against a single sendto.
        if self.state != "open" or type(data) is not bytes or len(data) > _FITS_ANY_GROUP:
            data = self._check_send(data)
        results: list[SendResult] = []
        dest = self._dest
        for sender in self._view:
            try:
                results.append(sender.ok[sender.send(data, dest)])
            except OSError as exc:
                results.append(SendResult(sender.iface.name, exc))
        return tuple(results)

    async def send_all(self, data: bytes | bytearray | memoryview) -> tuple[SendResult, ...]:
        results = self.send_all_nowait(data)
        for result in results:
            if result.error is not None and isinstance(result.error, BlockingIOError):
                return await self._retry_blocked(results, data)
        self._until_yield -= len(results) or 1
        if self._until_yield <= 0:
            await self._yield()
        return results

    async def _yield(self) -> None:
        self._until_yield = _COPIES_PER_YIELD
        await asyncio.sleep(0)

    async def _retry_blocked(
        self, results: tuple[SendResult, ...], data: bytes | bytearray | memoryview
    ) -> tuple[SendResult, ...]:
        # Called before any await since the round, so the senders are the ones just used.
        # Every other interface already has its copy: a full buffer on one never
        # holds up the others.
        senders = list(self._view)
        retried = list(results)
        for i, result in enumerate(results):
            if isinstance(result.error, BlockingIOError):
                retried[i] = await self._send_when_writable(senders[i], data)
        return tuple(retried)

    def send_nowait(self, data: bytes | bytearray | memoryview, interface: str) -> SendResult:
        payload = self._check_send(data)
        return self._send_one(self._named(interface), payload)

    async def send(self, data: bytes | bytearray | memoryview, interface: str) -> SendResult:
        payload = self._check_send(data)
        sender = self._named(interface)
        result = self._send_one(sender, payload)
        if isinstance(result.error, BlockingIOError):
            result = await self._send_when_writable(sender, payload)
        else:
            self._until_yield -= 1
            if self._until_yield <= 0:
                await self._yield()
        if result.error is not None:
            raise MulticastError(
                f"sending to {self._group}:{self._port} on {interface} failed: {result.error}"
            ) from result.error
        return result

    def _named(self, interface: str) -> _Sender:
        for sender in self._view:
            if sender.iface.name == interface:
                return sender
        current = ", ".join(self.names) or "none"
        raise ValueError(
            f"{interface!r} is not one of this endpoint's interfaces (current: {current})"
        )

    def _send_one(self, sender: _Sender, payload: bytes | bytearray | memoryview) -> SendResult:
        try:
            sent = sender.tx.sendto(payload, self._dest)
        except OSError as exc:
            return SendResult(sender.iface.name, exc)
        return SendResult(sender.iface.name, None, sent)

    async def send_many(
        self, payloads: Sequence[Payload], interface: str | None
    ) -> tuple[BatchSendResult, ...]:
        """Every payload, in order, out of every interface (or the named one)."""
        if self.state != "open":
            self._check_send(b"")  # raises EndpointClosedError
        checked = [
            p if type(p) is bytes and len(p) <= _FITS_ANY_GROUP else self._check_send(p)
            for p in payloads
        ]
        senders = [self._named(interface)] if interface is not None else list(self._view)
        # First every interface as far as its buffer takes; then the blocked ones.
        reached = [self._push(sender, checked, 0) for sender in senders]
        results = []
        for sender, (at, error) in zip(senders, reached, strict=True):
            while isinstance(error, BlockingIOError):
                error = await self._writable(sender)
                if error is None:
                    at, error = self._push(sender, checked, at)
            results.append(BatchSendResult(sender.iface.name, at, error))
        self._until_yield -= sum(r.sent for r in results) or 1
        if self._until_yield <= 0:
            await self._yield()
        return tuple(results)

    def _push(
        self, sender: _Sender, payloads: list[Payload], start: int
    ) -> tuple[int, OSError | None]:
        """(index reached, the error that stopped it or None)."""
        try:
            at = _sendmany.push(sender.tx, payloads, start, self._address, self._dest, sender.gso)
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
        self, sender: _Sender, payload: bytes | bytearray | memoryview
    ) -> SendResult:
        error = await self._writable(sender)
        if error is not None:
            return SendResult(sender.iface.name, error)
        return self._send_one(sender, payload)

    def _on_writable(self, sender: _Sender) -> None:
        assert self._loop is not None
        self._loop.remove_writer(sender.tx.fileno())
        waiter, sender.writable = sender.writable, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
