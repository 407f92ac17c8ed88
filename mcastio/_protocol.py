"""A protocol-style entry mirroring ``loop.create_datagram_endpoint``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from ._endpoint import MulticastEndpoint
from ._model import Datagram, InterfaceSelector, SendResult
from ._options import DEFAULT_COALESCE_DELAY, DEFAULT_RECEIVE_BUFFER
from ._watch import InterfaceEvent

__all__ = ["MulticastProtocol", "MulticastTransport", "create_multicast_endpoint"]

_log = logging.getLogger("mcastio")

P = TypeVar("P", bound=asyncio.BaseProtocol)


class MulticastProtocol(asyncio.DatagramProtocol):
    """A DatagramProtocol that can also see which interface a datagram came in on.

    Override :meth:`multicast_datagram_received` to get the whole :class:`Datagram`;
    by default it calls the standard ``datagram_received(data, addr)``. Override
    :meth:`datagrams_received` instead to get every datagram of one socket
    readiness event in a single call, the cheapest way to keep up with a flood.
    """

    def datagrams_received(self, batch: list[Datagram]) -> None:
        """Datagrams read in one go, oldest first; by default one call per datagram.

        The list may be kept but must not be modified: other readers may share it.
        """
        each = self.multicast_datagram_received
        for dgram in batch:
            each(dgram)

    def multicast_datagram_received(self, dgram: Datagram) -> None:
        self.datagram_received(dgram.data, dgram.source)


class MulticastTransport(asyncio.DatagramTransport):
    """The transport handed to the protocol: sends on every interface by default."""

    def __init__(self, endpoint: MulticastEndpoint, protocol: asyncio.BaseProtocol) -> None:
        super().__init__()
        self._endpoint = endpoint
        self._protocol = protocol
        self._closing = False
        self._close_task: asyncio.Task[None] | None = None

    @property
    def endpoint(self) -> MulticastEndpoint:
        return self._endpoint

    def send_all(
        self, data: bytes | bytearray | memoryview, group: str | None = None
    ) -> tuple[SendResult, ...]:
        """One copy out of every interface; one result per interface."""
        return self._endpoint.send_all_nowait(data, group=group)

    def send(
        self, data: bytes | bytearray | memoryview, interface: str, group: str | None = None
    ) -> SendResult:
        """One copy out of the named interface; the result carries any error."""
        return self._endpoint.send_nowait(data, interface=interface, group=group)

    def send_to(
        self, data: bytes | bytearray | memoryview, addr: tuple[str, int], interface: str
    ) -> SendResult:
        """One datagram to one host on ``interface``'s link (see ``MulticastEndpoint.send_to``)."""
        return self._endpoint.send_to_nowait(data, addr[0], addr[1], interface=interface)

    def answer(self, dgram: Datagram, data: bytes | bytearray | memoryview) -> SendResult:
        """Send ``data`` back to ``dgram``'s sender, out of the interface it came in on."""
        return self._endpoint.answer_nowait(dgram, data)

    def sendto(self, data: bytes | bytearray | memoryview, addr: Any = None) -> None:
        """``None`` or the group's own address sends on every interface.

        Errors on individual interfaces go to ``protocol.error_received``, as a
        DatagramTransport reports them.
        """
        ep = self._endpoint
        group = None
        if addr is not None:
            if tuple(addr[:2]) not in {(g, ep.port) for g in ep.groups}:
                raise ValueError(
                    f"this transport sends only to its groups ({', '.join(ep.groups)}) on "
                    f"port {ep.port}, not to {addr!r}"
                )
            group = addr[0]
        for result in ep.send_all_nowait(data, group=group):
            if result.error is not None and isinstance(self._protocol, asyncio.DatagramProtocol):
                self._protocol.error_received(result.error)

    def abort(self) -> None:
        self.close()

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        # Sockets are released now, not in a task that loop shutdown may cancel
        # before it ever runs; the task only waits for the watcher to finish.
        self._endpoint._teardown()
        # Kept so the task is not garbage-collected before it finishes.
        self._close_task = asyncio.get_running_loop().create_task(self._close())

    async def _close(self) -> None:
        try:
            await self._endpoint.aclose()
        finally:
            self._protocol.connection_lost(None)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "interfaces":
            return self._endpoint.interfaces
        if name == "sockname":
            # The receive sockets are bound to the group, not the wildcard address.
            return (self._endpoint.groups[0], self._endpoint.port)
        return default

    def get_write_buffer_size(self) -> int:
        return 0


async def create_multicast_endpoint(
    protocol_factory: Callable[[], P],
    group: str | Sequence[str],
    port: int,
    *,
    interfaces: InterfaceSelector = None,
    ttl: int = 1,
    loopback: bool = False,
    queue_size: int = 1024,
    sources: Sequence[str] | None = None,
    receive_buffer: int | None = DEFAULT_RECEIVE_BUFFER,
    receive_ttl: bool = False,
    coalesce_delay: float = DEFAULT_COALESCE_DELAY,
    watch: bool = True,
    poll_interval: float = 1.0,
    netlink: bool = True,
    on_interface_event: Callable[[InterfaceEvent], None] | None = None,
    source_port: str | int = "ephemeral",
    keepalive: bool | float = True,
    join: bool = True,
    replies: bool = True,
    tos: int | None = None,
    source_address: str | None = None,
) -> tuple[MulticastTransport, P]:
    """Like ``loop.create_datagram_endpoint``, joined and sending on every interface.

    The keyword arguments are :class:`MulticastEndpoint`'s; the endpoint is
    ``transport.endpoint``. Replies (``Datagram.group`` is None) reach the
    protocol like group datagrams; ``datagram_received`` sees their sender.
    """
    endpoint = MulticastEndpoint(
        group,
        port,
        interfaces=interfaces,
        ttl=ttl,
        loopback=loopback,
        queue_size=queue_size,
        sources=sources,
        receive_buffer=receive_buffer,
        receive_ttl=receive_ttl,
        coalesce_delay=coalesce_delay,
        watch=watch,
        poll_interval=poll_interval,
        netlink=netlink,
        on_interface_event=on_interface_event,
        source_port=source_port,
        keepalive=keepalive,
        join=join,
        replies=replies,
        tos=tos,
        source_address=source_address,
    )
    await endpoint.start()
    try:
        protocol = protocol_factory()
    except BaseException:
        await endpoint.aclose()
        raise
    transport = MulticastTransport(endpoint, protocol)
    sink: Callable[[list[Datagram]], None]
    if isinstance(protocol, MulticastProtocol):
        sink = protocol.datagrams_received
    elif isinstance(protocol, asyncio.DatagramProtocol):
        plain = protocol.datagram_received

        def sink(batch: list[Datagram]) -> None:
            for dgram in batch:
                plain(dgram.data, dgram.source)

    else:
        await endpoint.aclose()
        raise TypeError(f"protocol_factory must build a DatagramProtocol, not {protocol!r}")

    endpoint._add_sink(sink)
    try:
        protocol.connection_made(transport)
    except BaseException:
        await endpoint.aclose()
        raise
    return transport, protocol
