"""The sends of a :class:`MulticastEndpoint`: to the group, batched, and unicast answers.

A mixin kept apart from :mod:`._endpoint` so that neither class grows past what
one reads at once. Multicast sends go through :mod:`._transmit`; answers follow
the on-link rule of :mod:`._onlink` (docs/how-to/answering.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ._engine import Engine
from ._model import Datagram, SendResult
from ._onlink import UnicastRoute, route_answer, route_unicast
from ._sendmany import BatchSendResult

__all__ = ["EndpointSends"]


class EndpointSends:
    """Sending on an endpoint (``self._engine``): every interface, one, or one host."""

    _engine: Engine
    _send_all_nowait: Callable[[bytes | bytearray | memoryview, str | None], tuple[SendResult, ...]]

    # -- sending -------------------------------------------------------------------

    def send_all_nowait(
        self, data: bytes | bytearray | memoryview, *, group: str | None = None
    ) -> tuple[SendResult, ...]:
        """Send one copy out of every current interface without waiting.

        A full socket buffer shows up as a ``BlockingIOError`` in that interface's
        result. ``group`` names the destination; an endpoint with several groups
        needs it (``ValueError`` otherwise).
        """
        return self._send_all_nowait(data, group)

    async def send_all(
        self, data: bytes | bytearray | memoryview, *, group: str | None = None
    ) -> tuple[SendResult, ...]:
        """Send one copy out of every current interface; one result per interface.

        A failure on one interface is reported in its result and never raises. A
        link that refuses sends (see :attr:`refused`) is reported in one result and
        left out of later ones until it changes.
        """
        return await self._engine.tx.send_all(data, group)

    def send_nowait(
        self, data: bytes | bytearray | memoryview, *, interface: str, group: str | None = None
    ) -> SendResult:
        """Send one copy out of the named interface without waiting; errors are in the result."""
        return self._engine.tx.send_nowait(data, interface, group)

    async def send(
        self, data: bytes | bytearray | memoryview, *, interface: str, group: str | None = None
    ) -> SendResult:
        """Send one copy out of the named interface; raises ``MulticastError`` on failure."""
        return await self._engine.tx.send(data, interface, group)

    async def send_many(
        self,
        datagrams: Sequence[bytes | bytearray | memoryview],
        *,
        interface: str | None = None,
        group: str | None = None,
    ) -> tuple[BatchSendResult, ...]:
        """Send every datagram, in order, out of every current interface (or the named one).

        Batched where the compiled extension is built: one ``sendmmsg`` call carries up
        to 1024 datagrams, and a run of same-size datagrams (up to 1400 bytes) goes as
        one UDP GSO message where the route takes it. Otherwise one ``sendto`` each,
        with the same results. One result per interface: how many were sent (the first
        ``sent``, in order) and the error that stopped the rest; a full buffer is
        waited for, as in :meth:`send_all`. ``group`` as in :meth:`send_all`.
        """
        return await self._engine.tx.send_many(datagrams, interface, group)

    # -- unicast: answering (docs/how-to/answering.md) ------------------------------------

    def _answer_route(self, dgram: Datagram) -> UnicastRoute:
        engine = self._engine
        return route_answer(
            dgram.source, dgram.interface, engine.links.interfaces, engine.options.group.family
        )

    def _route(self, address: str, port: int, interface: str) -> UnicastRoute:
        engine = self._engine
        return route_unicast(
            address, port, interface, engine.links.interfaces, engine.options.group.family
        )

    def send_to_nowait(
        self, data: bytes | bytearray | memoryview, address: str, port: int, *, interface: str
    ) -> SendResult:
        """Like :meth:`send_to` without waiting; socket errors are in the result."""
        return self._engine.tx.send_unicast_nowait(data, self._route(address, port, interface))

    async def send_to(
        self, data: bytes | bytearray | memoryview, address: str, port: int, *, interface: str
    ) -> SendResult:
        """Send one datagram to one host on ``interface``'s link, from its transmit socket.

        It leaves from that interface's address in the host's prefix, and from the
        group's port when ``source_port="group"``. :class:`NotOnLinkError` when the
        host is not on that link, :class:`InterfaceGoneError` when the endpoint no
        longer uses ``interface``; ``MulticastError`` when the send fails.
        """
        return await self._engine.tx.send_unicast(data, self._route(address, port, interface))

    def answer_nowait(self, dgram: Datagram, data: bytes | bytearray | memoryview) -> SendResult:
        """Like :meth:`answer` without waiting; socket errors are in the result."""
        route = self._answer_route(dgram)
        return self._engine.tx.send_unicast_nowait(data, route)

    async def answer(self, dgram: Datagram, data: bytes | bytearray | memoryview) -> SendResult:
        """Send ``data`` back to ``dgram``'s sender, out of the interface it came in on.

        :meth:`send_to` with ``dgram.source`` (its IPv6 scope included) and
        ``dgram.interface``; works for group datagrams and replies alike.
        """
        route = self._answer_route(dgram)
        return await self._engine.tx.send_unicast(data, route)
