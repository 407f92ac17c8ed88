"""Where a datagram is sent: a sender per interface, and the sends over them.

``IP_MULTICAST_IF`` takes one interface per socket. Where no replies come back
(``source_port="group"``) the pool holds one such socket per interface, shared by
every group of the endpoint and every endpoint of the loop with the same send
options (:mod:`._txsocket`). Where replies come back, to a port of the endpoint's
own, one socket serves all its interfaces, each send naming its interface by
pktinfo (:mod:`._txnet`), and ``send_all`` is one call into the compiled
extension where it is built. The portable profile (``capabilities().pinned_send``
False) holds a private socket per interface instead, each reading its replies
(with a fixed source port, each bound to its interface's own address and that
port), and sends with one ``sendto`` per copy. A copy that meets a full socket
buffer is retried once the socket drains, after every other interface already
has its copy. A link that refuses sends (:func:`._net.is_link_refusal`) is
reported once, then left out of ``send_all`` until it changes. Unicast and
batched sends are in :mod:`._poolsends`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

from . import _drain
from ._errors import EndpointClosedError, MulticastError
from ._model import MAX_PAYLOAD_V4, MAX_PAYLOAD_V6, Group, Interface, SendResult, validate_payload
from ._net import gone_error
from ._onlink import UnicastRoute
from ._pooldests import PoolDestinations
from ._poolrefusals import PoolRefusals
from ._poolsends import PoolSends, Sender
from ._txsocket import SendOptions, SharedSockets, TxSocket, shared_sockets

__all__ = ["TransmitPool"]

_log = logging.getLogger("mcastio")

# A bytes payload up to this size is valid for every group, so send_all skips the checks.
_FITS_ANY_GROUP = min(MAX_PAYLOAD_V4, MAX_PAYLOAD_V6)
# Copies sent by the awaitable sends between two yields to the event loop (~1 ms):
# a sendto into a buffer with room never blocks, so a tight ``await send_all()``
# loop would otherwise starve the watcher, the readers and every other task.
_COPIES_PER_YIELD = 256


SocketHook = Callable[[socket.socket], None]


def _ignore(sock: socket.socket) -> None:
    return None


class TransmitPool(PoolDestinations, PoolRefusals, PoolSends):
    """The transmit sockets of one endpoint, by interface index.

    With ``group_port`` set in the options every copy leaves from the group's port,
    the sockets receive nothing and are shared in the loop; otherwise each socket
    has a port of its own and is the endpoint's alone, and the owner is told when
    one opens or closes (``on_open``/``on_close``) so it can read the replies.
    """

    def __init__(
        self,
        group: Group,
        port: int,
        options: SendOptions,
        *,
        on_open: SocketHook = _ignore,
        on_close: SocketHook = _ignore,
        owners: dict[socket.socket, str] | None = None,
    ) -> None:
        self._group = group
        self._options = options
        # Sockets bound to the group's port receive nothing: no replies to read.
        self._on_open = _ignore if options.shareable else on_open
        self._on_close = _ignore if options.shareable else on_close
        self._shared: SharedSockets | None = None
        #: The interface of each private socket per interface (portable profile): the
        #: replies read there arrive on it, as far as anyone can tell without pktinfo.
        self.owners: dict[socket.socket, str] = {} if owners is None else owners
        self._init_destinations(group, port)
        self._senders: dict[int, Sender] = {}
        # The one socket of every interface where replies come back (options.pinned).
        self._pinned: TxSocket | None = None
        # Each sender's packed pktinfo, in send order, for the compiled send_all;
        # None: to be rebuilt, since the senders changed.
        self._controls: tuple[bytes, ...] | None = None
        # Links whose sends were refused: out of send_all until they change (retry()).
        self._parked: dict[int, tuple[Sender, OSError]] = {}
        self._to_park: list[tuple[Sender, OSError]] = []
        # A live view, kept so the send path skips one method call per datagram.
        self._view = self._senders.values()
        self._loop: asyncio.AbstractEventLoop | None = None
        # Copies the awaitable sends may still make before they yield once.
        self._until_yield = _COPIES_PER_YIELD
        #: "new", "open" or "closed", set by the owner: sends need an open endpoint.
        self.state = "new"

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        if self._options.shareable:
            self._shared = shared_sockets(loop)
        self.state = "open"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.iface.name for s in self._view)

    @property
    def sockets(self) -> tuple[TxSocket, ...]:
        """The sockets in use, refused links' included (for tests and the benchmark)."""
        senders = [*self._view, *(p[0] for p in self._parked.values())]
        return tuple(dict.fromkeys(s.tx for s in senders))

    # -- the pool ------------------------------------------------------------------

    def open(self, iface: Interface) -> None:
        """A sender for ``iface``; raises MulticastError when its socket cannot be made."""
        self._senders[iface.index] = Sender(iface, self._acquire(iface), self._options.pin(iface))
        self._controls = None

    def replace(self, iface: Interface) -> None:
        """A fresh socket for a changed interface; the old one stays if that fails."""
        sender = self._sender(iface.index)
        self._controls = None
        if self._options.pinned:
            # The socket holds nothing of the interface (and keeps its port, which
            # responders may have learnt): only the pktinfo of each send changes.
            sender.update(iface, pin=self._options.pin(iface))
            return
        if self._options.per_interface and not self._options.moved(
            self._group, sender.tx.sock, iface
        ):
            # Its own socket, on its own port, bound to the wildcard: pointed at the
            # new address, so the port responders may have learnt stays.
            self._options.repoint(sender.tx.sock, iface)
            sender.update(iface)
            self.owners[sender.tx.sock] = iface.name
            return
        # Shared, or bound to the old address with a fixed port: the new socket binds
        # the new address (and that port) before the old one lets go.
        tx = self._acquire(iface)
        self._release(sender.tx)
        sender.update(iface, tx)

    def refresh(self, iface: Interface) -> None:
        """New details for an interface whose socket stays valid.

        Except a socket bound to an IPv6 address the interface lost (a fixed port on
        the portable profile): re-opened as :meth:`replace` does, or MulticastError.
        """
        sender = self._sender(iface.index)
        if self._options.moved(self._group, sender.tx.sock, iface):
            self.replace(iface)
            return
        sender.update(iface, pin=self._options.pin(iface))
        if sender.tx.sock in self.owners:
            self.owners[sender.tx.sock] = iface.name
        self._controls = None

    def _sender(self, index: int) -> Sender:
        parked = self._parked.get(index)
        return parked[0] if parked is not None else self._senders[index]

    def close(self, index: int) -> None:
        sender = self._senders.pop(index, None)
        parked = self._parked.pop(index, None)
        if parked is not None:
            sender = parked[0]
        if sender is not None:
            self._controls = None
            self._release(sender.tx)

    def close_all(self) -> None:
        self.state = "closed"
        for sender in [*self._view, *(p[0] for p in self._parked.values())]:
            self._release(sender.tx)
        self._senders.clear()
        self._parked.clear()
        self._controls = None

    def _acquire(self, iface: Interface) -> TxSocket:
        if self._shared is not None:
            return self._shared.acquire(self._options, self._group, iface)
        pinned = self._options.pinned
        tx = self._pinned
        if tx is not None and pinned:
            tx.users += 1
            return tx
        try:
            tx = TxSocket(self._options.open(self._group, iface))
        except MulticastError as exc:
            senders = [*self._view, *(p[0] for p in self._parked.values())]
            held = ((s.iface.name, s.tx.sock) for s in senders if s.iface.index != iface.index)
            clearer = self._options.held_elsewhere(self._group, iface, held)
            if clearer is None:
                raise
            raise clearer from exc
        if not pinned:
            self.owners[tx.sock] = iface.name
        try:
            self._on_open(tx.sock)
        except BaseException:
            self.owners.pop(tx.sock, None)
            tx.close()
            raise
        if pinned:
            self._pinned = tx
        return tx

    def _release(self, tx: TxSocket) -> None:
        """This endpoint is done with ``tx``: closed with its last user here or elsewhere."""
        if self._shared is not None:
            self._shared.release(tx)
            return
        tx.users -= 1
        if tx.users > 0:
            return
        if self._pinned is tx:
            self._pinned = None
        self._on_close(tx.sock)
        self.owners.pop(tx.sock, None)
        tx.close()

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
        cdrain = _drain.cdrain
        if self._pinned is not None and cdrain is not None:
            return self._send_each(cdrain, data, dest)
        results: list[SendResult] = []
        for sender in self._view:
            try:
                results.append(sender.ok[sender.send(data, dest)])
            except OSError as exc:
                self._failed(results, sender, exc)
        if self._to_park:
            self._park(dest)
        return tuple(results)

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

    def _all(self) -> list[Sender]:
        return list(self._view)

    def _named(self, interface: str) -> Sender:
        # A link left out of send_all is still tried when named: the caller asks for it.
        for sender in [*self._view, *(p[0] for p in self._parked.values())]:
            if sender.iface.name == interface:
                return sender
        current = ", ".join(self.names) or "none"
        raise ValueError(
            f"{interface!r} is not one of this endpoint's interfaces (current: {current})"
        )

    def _send_one(
        self, sender: Sender, payload: bytes | bytearray | memoryview, dest: tuple[str, int]
    ) -> SendResult:
        try:
            sent = sender.send(payload, dest)
        except OSError as exc:
            return SendResult(sender.iface.name, exc)
        # A named send that went through on a left-out link: it works again.
        if sender.iface.index in self._parked:
            self.retry(sender.iface.index)
        return SendResult(sender.iface.name, None, sent)

    async def _writable(self, sender: Sender) -> OSError | None:
        """Wait until ``sender``'s socket takes more; None, or why it never will."""
        assert self._loop is not None
        tx = sender.tx
        error = await tx.room(self._loop, sender.iface.name)
        if error is None and (sender.tx is not tx or not self._holds(sender)):
            # Replaced, dropped or closed meanwhile: a shared socket lives on for the
            # other endpoints, so its room must not send this endpoint's copy.
            return gone_error(sender.iface.name)
        return error

    def _holds(self, sender: Sender) -> bool:
        try:
            return self.state == "open" and self._sender(sender.iface.index) is sender
        except KeyError:
            return False

    async def _send_when_writable(
        self,
        sender: Sender,
        payload: bytes | bytearray | memoryview,
        dest: tuple[str, int] | UnicastRoute,
    ) -> SendResult:
        error = await self._writable(sender)
        if error is not None:
            return SendResult(sender.iface.name, error)
        if isinstance(dest, UnicastRoute):
            return self._unicast_one(sender, payload, dest)
        return self._send_one(sender, payload, dest)
