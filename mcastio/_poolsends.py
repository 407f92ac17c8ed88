"""The transmit pool's other sends: one datagram to one host, and batches.

A mixin of :class:`._transmit.TransmitPool`, kept apart so that neither grows
past what one reads at once. Unicast leaves from the route's interface's socket
(:mod:`._onlink`); a batch goes out with sendmmsg, and with GSO where the socket
takes it (:mod:`._sendmany`).
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable, Sequence, ValuesView
from types import ModuleType

from . import _sendmany
from ._errors import MulticastError
from ._fastpath import ok_results
from ._model import MAX_PAYLOAD_V4, MAX_PAYLOAD_V6, Interface, SendResult
from ._net import is_link_refusal
from ._onlink import UnicastRoute
from ._sendmany import BatchSendResult, GsoState, Payload
from ._sendto import send_unicast
from ._txnet import Pin
from ._txsocket import SendOptions, TxSocket

__all__ = ["PoolSends", "Sender"]

# A bytes payload up to this size is valid for every group: no check needed.
_FITS_ANY_GROUP = min(MAX_PAYLOAD_V4, MAX_PAYLOAD_V6)


class Sender:
    """One interface of an endpoint, and the transmit socket it sends on.

    With a ``pin`` the socket names no interface of its own and every send
    carries this one's pktinfo (:mod:`._txnet`).
    """

    __slots__ = ("gso", "iface", "ok", "pin", "send", "tx")

    def __init__(self, iface: Interface, tx: TxSocket, pin: Pin | None = None) -> None:
        self.tx = tx
        # Per interface, not per socket: GSO holds or fails by the route taken.
        self.gso = GsoState()
        self.update(iface, tx, pin)

    def update(self, iface: Interface, tx: TxSocket | None = None, pin: Pin | None = None) -> None:
        self.iface = iface
        if tx is not None:
            self.tx = tx
        self.pin = pin
        # Bound once here, not looked up on every send: send_all is measured
        # against bare sendto calls.
        self.send = self.tx.sock.sendto if pin is None else _pinned_send(self.tx.sock, pin)
        self.ok = ok_results(iface.name)


def _pinned_send(
    sock: socket.socket, pin: Pin
) -> Callable[[bytes | bytearray | memoryview, tuple[str, int]], int]:
    sendmsg, cmsgs = sock.sendmsg, [pin.cmsg]

    def send(data: bytes | bytearray | memoryview, dest: tuple[str, int]) -> int:
        return sendmsg([data], cmsgs, 0, dest)

    return send


class PoolSends:
    """Unicast and batched sends over the pool's senders (see TransmitPool)."""

    _options: SendOptions
    _addresses: dict[tuple[str, int], bytes]
    _view: ValuesView[Sender]
    _pinned: TxSocket | None
    _controls: tuple[bytes, ...] | None
    _to_park: list[tuple[Sender, OSError]]
    _until_yield: int
    state: str

    def _check_send(self, data: object) -> bytes | bytearray | memoryview:
        raise NotImplementedError

    def _named(self, interface: str) -> Sender:
        raise NotImplementedError

    def _dest_for(self, group: str | None) -> tuple[str, int]:
        raise NotImplementedError

    def _all(self) -> list[Sender]:
        raise NotImplementedError

    def _park(self, dest: tuple[str, int]) -> None:
        raise NotImplementedError

    async def _writable(self, sender: Sender) -> OSError | None:
        raise NotImplementedError

    async def _send_when_writable(
        self,
        sender: Sender,
        payload: bytes | bytearray | memoryview,
        dest: tuple[str, int] | UnicastRoute,
    ) -> SendResult:
        raise NotImplementedError

    async def _yield(self) -> None:
        raise NotImplementedError

    # -- send_all's round in one compiled call ------------------------------------

    def _send_each(
        self, cdrain: ModuleType, data: bytes | bytearray | memoryview, dest: tuple[str, int]
    ) -> tuple[SendResult, ...]:
        """send_all_nowait's round in one compiled call: a sendmsg per interface."""
        pinned = self._pinned
        assert pinned is not None
        controls = self._controls
        if controls is None:
            controls = self._controls = tuple(s.pin.packed for s in self._view if s.pin)
        outcomes = cdrain.send_each(pinned.sock.fileno(), data, self._addresses[dest], controls)
        results: list[SendResult] = []
        for sender, sent in zip(self._view, outcomes, strict=True):
            if sent >= 0:
                results.append(sender.ok[sent])
                continue
            # OSError(errno, text) is the subclass the errno maps to (BlockingIOError).
            self._failed(results, sender, OSError(-sent, os.strerror(-sent)))
        if self._to_park:
            self._park(dest)
        return tuple(results)

    def _failed(self, results: list[SendResult], sender: Sender, exc: OSError) -> None:
        """A copy the kernel refused: its result, and the link parked if it refuses sends."""
        results.append(SendResult(sender.iface.name, exc))
        if is_link_refusal(exc):
            self._to_park.append((sender, exc))

    # -- waiting for room ----------------------------------------------------------

    async def _retry_blocked(
        self,
        results: tuple[SendResult, ...],
        data: bytes | bytearray | memoryview,
        dest: tuple[str, int],
    ) -> tuple[SendResult, ...]:
        # Called before any await since the round, so the senders are the ones just used.
        # Every other interface already has its copy: a full buffer on one never
        # holds up the others.
        senders = {s.iface.name: s for s in self._all()}
        retried = list(results)
        for i, result in enumerate(results):
            if isinstance(result.error, BlockingIOError):
                retried[i] = await self._send_when_writable(senders[result.interface], data, dest)
        return tuple(retried)

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
        self, sender: Sender, payload: bytes | bytearray | memoryview, route: UnicastRoute
    ) -> SendResult:
        try:
            if self._options.portable:
                # A socket per interface, its multicast interface set: the route picks the
                # device and source of a unicast datagram (no pktinfo to pin them).
                sent = sender.tx.sock.sendto(payload, route.destination)
            else:
                sent = send_unicast(
                    sender.tx.sock, payload, route.destination, route.ifindex, route.source
                )
        except OSError as exc:
            return SendResult(sender.iface.name, exc)
        return SendResult(sender.iface.name, None, sent)

    # -- batches -------------------------------------------------------------------

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
        senders = [self._named(interface)] if interface is not None else self._all()
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
        self, sender: Sender, payloads: list[Payload], start: int, dest: tuple[str, int]
    ) -> tuple[int, OSError | None]:
        """(index reached, the error that stopped it or None)."""
        address = self._addresses[dest]
        tx = sender.tx
        try:
            at = _sendmany.push(
                tx.sock,
                payloads,
                start,
                address,
                dest,
                sender.gso,
                sender.pin,
                batched=not self._options.portable,
            )
        except OSError as exc:
            return start, exc
        if at < len(payloads):
            return at, BlockingIOError(errno.EAGAIN, "the socket buffer is full")
        return at, None
