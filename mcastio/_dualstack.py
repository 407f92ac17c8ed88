"""One protocol on IPv4 and IPv6 at once: two endpoints behind one object.

mDNS (224.0.0.251 and ff02::fb), SSDP (239.255.255.250 and ff02::c/ff05::c) and
many industrial protocols speak both families on the same port. A
``DualStackEndpoint`` owns one :class:`MulticastEndpoint` per family and merges
what they receive into one stream; ``Datagram.group`` tells the families apart.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType

from ._endpoint import MulticastEndpoint
from ._errors import EndpointClosedError, MulticastError
from ._model import Datagram, InterfaceSelector, SendResult, parse_group
from ._options import (
    DEFAULT_COALESCE_DELAY,
    DEFAULT_RECEIVE_BUFFER,
    SnapshotSource,
    validate_flag,
    validate_queue_size,
)
from ._subscription import Subscription
from ._watch import InterfaceEvent

__all__ = ["DualSendResult", "DualStackEndpoint", "open_dual_stack"]

_log = logging.getLogger("mcastio")


@dataclass(frozen=True, slots=True)
class DualSendResult:
    """The per-interface results of one send, for each family."""

    ipv4: tuple[SendResult, ...] = ()
    ipv6: tuple[SendResult, ...] = ()

    @property
    def ok(self) -> bool:
        """True when every copy in both families went out."""
        return all(r.ok for r in (*self.ipv4, *self.ipv6))


class DualStackEndpoint:
    """An IPv4 and an IPv6 :class:`MulticastEndpoint` for one protocol and port.

    ``group_v4`` must be an IPv4 group and ``group_v6`` an IPv6 group. The other
    keyword arguments apply to both endpoints, except ``sources_v4``/``sources_v6``
    for source-specific groups and ``source_address_v4``/``source_address_v6``, the
    address each family sends from (``tos`` marks both). With ``require_both=False``
    (the default) a host where one family has no usable interface runs on the other
    alone, with a warning; :attr:`ipv4`/:attr:`ipv6` then say which one is open. ``join=False``
    makes both send-only.
    """

    def __init__(
        self,
        group_v4: str,
        group_v6: str,
        port: int,
        *,
        interfaces: InterfaceSelector = None,
        ttl: int = 1,
        loopback: bool = False,
        queue_size: int = 1024,
        sources_v4: Sequence[str] | None = None,
        sources_v6: Sequence[str] | None = None,
        require_both: bool = False,
        snapshot_source: SnapshotSource | None = None,
        watch: bool = True,
        receive_buffer: int | None = DEFAULT_RECEIVE_BUFFER,
        receive_ttl: bool = False,
        coalesce_delay: float = DEFAULT_COALESCE_DELAY,
        poll_interval: float = 1.0,
        netlink: bool = True,
        on_interface_event: Callable[[InterfaceEvent], None] | None = None,
        source_port: str | int = "ephemeral",
        keepalive: bool | float = True,
        join: bool = True,
        replies: bool = True,
        tos: int | None = None,
        source_address_v4: str | None = None,
        source_address_v6: str | None = None,
    ) -> None:
        if parse_group(group_v4).family != socket.AF_INET:
            raise ValueError(
                f"group_v4 must be an IPv4 group such as '224.0.0.251', not {group_v4!r}"
            )
        if parse_group(group_v6).family != socket.AF_INET6:
            raise ValueError(f"group_v6 must be an IPv6 group such as 'ff02::fb', not {group_v6!r}")
        self._queue_size = validate_queue_size(queue_size)
        self._v4, self._v6 = (
            MulticastEndpoint(
                group,
                port,
                interfaces=interfaces,
                ttl=ttl,
                loopback=loopback,
                queue_size=queue_size,
                snapshot_source=snapshot_source,
                sources=sources,
                watch=watch,
                receive_buffer=receive_buffer,
                receive_ttl=receive_ttl,
                coalesce_delay=coalesce_delay,
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
            for group, sources, source_address in (
                (group_v4, sources_v4, source_address_v4),
                (group_v6, sources_v6, source_address_v6),
            )
        )
        for endpoint in (self._v4, self._v6):
            # A family with no usable interface at start is left out, as documented.
            endpoint._engine.require_interface_at_start = True
        self._require_both = validate_flag("require_both", require_both)
        self._open: tuple[MulticastEndpoint, ...] = ()
        self._state = "new"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._subs: dict[int, weakref.ref[Subscription]] = {}

    @property
    def ipv4(self) -> MulticastEndpoint | None:
        """The IPv4 endpoint while it is open."""
        return self._v4 if self._v4 in self._open else None

    @property
    def ipv6(self) -> MulticastEndpoint | None:
        """The IPv6 endpoint while it is open."""
        return self._v6 if self._v6 in self._open else None

    @property
    def port(self) -> int:
        return self._v4.port

    @property
    def closed(self) -> bool:
        return self._state == "closed"

    async def start(self) -> None:
        """Start both endpoints; see ``require_both`` for a family that cannot start."""
        if self._state == "open":
            return
        if self._state == "closed":
            raise EndpointClosedError("this endpoint was closed; create a new one")
        self._loop = asyncio.get_running_loop()
        opened: list[MulticastEndpoint] = []
        errors: list[MulticastError] = []
        try:
            for endpoint in (self._v4, self._v6):
                try:
                    await endpoint.start()
                except MulticastError as exc:
                    if self._require_both:
                        raise
                    errors.append(exc)
                    _log.warning("dual-stack: running without %s: %s", endpoint.group, exc)
                else:
                    opened.append(endpoint)
        except BaseException:
            for endpoint in opened:
                await endpoint.aclose()
            raise
        if not opened:
            raise MulticastError(
                "neither IPv4 nor IPv6 could start:\n" + "\n".join(str(e) for e in errors)
            ) from errors[0]
        self._open = tuple(opened)
        self._state = "open"

    async def aclose(self) -> None:
        """Close both endpoints and end every merged subscription. Idempotent."""
        if self._state == "closed":
            return
        self._state = "closed"
        for ref in list(self._subs.values()):
            sub = ref()
            if sub is not None:
                sub.close()
        self._subs.clear()
        for endpoint in (self._v4, self._v6):
            await endpoint.aclose()
        self._open = ()

    async def __aenter__(self) -> DualStackEndpoint:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<DualStackEndpoint {self._v4!r} {self._v6!r}>"

    def subscribe(self, queue_size: int | None = None) -> Subscription:
        """One reader of both families' datagrams, merged in arrival order."""
        if self._state != "open":
            raise EndpointClosedError(
                "subscribe() needs a started endpoint: use 'async with' or await start()"
            )
        assert self._loop is not None
        size = self._queue_size if queue_size is None else validate_queue_size(queue_size)
        sub = Subscription(size)
        # Each endpoint feeds it through a weak reference and detaches on its own
        # when the subscription is collected; close() detaches from both.
        detaches = [endpoint._attach(sub) for endpoint in self._open]
        key = id(sub)

        def detach(*_: object) -> None:
            for undo in detaches:
                undo()
            self._subs.pop(key, None)

        sub._on_close = detach
        self._subs[key] = weakref.ref(sub)
        return sub

    def __aiter__(self) -> Subscription:
        return self.subscribe()

    async def send_all(self, data: bytes | bytearray | memoryview) -> DualSendResult:
        """One copy out of every interface of each open family."""
        self._check_open()
        v4 = await self._v4.send_all(data) if self._v4 in self._open else ()
        v6 = await self._v6.send_all(data) if self._v6 in self._open else ()
        return DualSendResult(v4, v6)

    def send_all_nowait(self, data: bytes | bytearray | memoryview) -> DualSendResult:
        """Like :meth:`send_all` without waiting; a full buffer shows in the results."""
        self._check_open()
        v4 = self._v4.send_all_nowait(data) if self._v4 in self._open else ()
        v6 = self._v6.send_all_nowait(data) if self._v6 in self._open else ()
        return DualSendResult(v4, v6)

    def _family_of(self, address: str) -> MulticastEndpoint:
        self._check_open()
        endpoint = self._v6 if ":" in address else self._v4
        if endpoint not in self._open:
            raise MulticastError(f"cannot send to {address}: this endpoint runs without its family")
        return endpoint

    async def send_to(
        self, data: bytes | bytearray | memoryview, address: str, port: int, *, interface: str
    ) -> SendResult:
        """:meth:`MulticastEndpoint.send_to` on the endpoint of ``address``'s family."""
        return await self._family_of(address).send_to(data, address, port, interface=interface)

    def send_to_nowait(
        self, data: bytes | bytearray | memoryview, address: str, port: int, *, interface: str
    ) -> SendResult:
        endpoint = self._family_of(address)
        return endpoint.send_to_nowait(data, address, port, interface=interface)

    async def answer(self, dgram: Datagram, data: bytes | bytearray | memoryview) -> SendResult:
        """Answer ``dgram`` (of either family) out of the interface it came in on."""
        return await self._family_of(dgram.source[0]).answer(dgram, data)

    def answer_nowait(self, dgram: Datagram, data: bytes | bytearray | memoryview) -> SendResult:
        return self._family_of(dgram.source[0]).answer_nowait(dgram, data)

    def _check_open(self) -> None:
        if self._state != "open":
            raise EndpointClosedError("cannot send on a dual-stack endpoint that is not open")


async def open_dual_stack(
    group_v4: str,
    group_v6: str,
    port: int,
    *,
    interfaces: InterfaceSelector = None,
    ttl: int = 1,
    loopback: bool = False,
    queue_size: int = 1024,
    require_both: bool = False,
    sources_v4: Sequence[str] | None = None,
    sources_v6: Sequence[str] | None = None,
    watch: bool = True,
    receive_buffer: int | None = DEFAULT_RECEIVE_BUFFER,
    receive_ttl: bool = False,
    coalesce_delay: float = DEFAULT_COALESCE_DELAY,
    poll_interval: float = 1.0,
    netlink: bool = True,
    on_interface_event: Callable[[InterfaceEvent], None] | None = None,
    source_port: str | int = "ephemeral",
    keepalive: bool | float = True,
    join: bool = True,
    replies: bool = True,
    tos: int | None = None,
    source_address_v4: str | None = None,
    source_address_v6: str | None = None,
) -> DualStackEndpoint:
    """A started :class:`DualStackEndpoint`; close it with ``aclose()`` or ``async with``."""
    endpoint = DualStackEndpoint(
        group_v4,
        group_v6,
        port,
        interfaces=interfaces,
        ttl=ttl,
        loopback=loopback,
        queue_size=queue_size,
        require_both=require_both,
        sources_v4=sources_v4,
        sources_v6=sources_v6,
        watch=watch,
        receive_buffer=receive_buffer,
        receive_ttl=receive_ttl,
        coalesce_delay=coalesce_delay,
        poll_interval=poll_interval,
        netlink=netlink,
        on_interface_event=on_interface_event,
        source_port=source_port,
        keepalive=keepalive,
        join=join,
        replies=replies,
        tos=tos,
        source_address_v4=source_address_v4,
        source_address_v6=source_address_v6,
    )
    await endpoint.start()
    return endpoint
