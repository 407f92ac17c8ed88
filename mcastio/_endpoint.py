"""``MulticastEndpoint``: receive on every interface, send out of every interface.

The public face of an endpoint: its options, its lifecycle and its API. What runs
behind it (sockets, joins, reads, sends, the watcher and the keeper) is wired up in
:mod:`._engine`; docs/explanation/design.md maps the modules.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType

from ._endpointgroups import EndpointGroups
from ._endpointsend import EndpointSends
from ._engine import Engine
from ._errors import EndpointClosedError
from ._hostmonitor import HostMonitorState
from ._keeper import KeepaliveState
from ._model import Interface, InterfaceSelector
from ._options import (
    DEFAULT_COALESCE_DELAY,
    DEFAULT_RECEIVE_BUFFER,
    EndpointOptions,
    SnapshotSource,
    validate_max_batch,
    validate_queue_size,
)
from ._platform.loops import require_readers
from ._receive import Sink
from ._subscription import BatchSubscription, Subscription
from ._watch import InterfaceEvent
from ._watcher import InterfaceEventStream

__all__ = ["EndpointStats", "MulticastEndpoint"]


@dataclass(frozen=True, slots=True)
class EndpointStats:
    """Counters since the endpoint started."""

    received: int
    #: Datagrams read but not delivered: on a receive socket, not sent to the group
    #: (other groups leak in only where IPV6_MULTICAST_ALL is missing); on a transmit
    #: socket, a reply from a link the endpoint does not use (only where it could
    #: not be tied to its device). Unicast to the group's port never arrives at all.
    not_for_group: int
    #: Datagrams larger than the receive buffer, discarded.
    truncated: int
    #: Datagrams dropped from full subscriber queues, summed over subscribers.
    dropped: int
    #: Datagrams the kernel dropped because a receive socket's buffer was full
    #: (read on demand with SO_MEMINFO; SO_RXQ_OVFL reports where that is missing),
    #: transmit sockets' replies included.
    kernel_dropped: int = 0
    #: Replies delivered: unicast sent to a transmit socket (``Datagram.group`` is
    #: None); not counted in ``received``, which counts group datagrams.
    replies: int = 0
    #: Replies not delivered because their source is not on the link they arrived
    #: on (spoofed, or routed: an endpoint with ``ttl`` above 1 delivers those).
    replies_off_link: int = 0
    #: Unicast to a transmit socket of an endpoint made with ``replies=False``:
    #: discarded by the kernel before it was queued (a socket filter), never read.
    replies_refused: int = 0


class MulticastEndpoint(EndpointGroups, EndpointSends):
    """Join ``group`` on every eligible interface and send out of each of them.

    ``group`` is one group, or a list of groups of one address family that share
    ``port``; :meth:`add_group` and :meth:`remove_group` change them at run time,
    and :attr:`Datagram.group` says which one each datagram was sent to. With
    ``join=False`` the endpoint is send-only: it sends to its groups on every
    interface (and reads unicast replies) but never joins, so the host sends no
    IGMP/MLD report or Leave for it (docs/reference/groups-and-interfaces.md).

    ``interfaces`` narrows the set: a list of names, a predicate over
    :class:`Interface`, or a selection such as :func:`mcastio.no_virtual_links`.
    ``ttl`` (default 1) keeps traffic on the local links; ``loopback`` (default
    off) controls whether this host's own programs see what it sends. Each
    subscriber queues at most ``queue_size`` datagrams.
    ``sources`` (for a group in 232.0.0.0/8 or ff3x::/32) makes the joins
    source-specific: only datagrams from those senders are delivered.

    With ``watch`` (the default) the endpoint follows interfaces as they come,
    go and change address, by itself: through netlink on Linux (``netlink=True``),
    else by polling every ``poll_interval`` seconds. Changes are logged at INFO,
    passed to ``on_interface_event`` and to every :meth:`interface_events` iterator.
    ``receive_buffer`` is the SO_RCVBUF requested per receive socket (``None``:
    the kernel's default); the kernel caps it at ``net.core.rmem_max``.
    ``receive_ttl`` fills :attr:`Datagram.ttl` with the TTL or hop limit each
    group datagram arrived with. ``coalesce_delay`` (seconds, default 1 ms, 0: off)
    bounds how long a flood waits unread to be read in batches (docs/explanation/performance.md).

    ``source_port="ephemeral"`` (the default) sends each copy from a port of its own
    and delivers unicast answers to it as replies (``Datagram.group`` is None);
    ``"group"`` sends from the group's port, as mDNS requires (docs/how-to/request-and-reply.md);
    a number sends from that port (replies delivered too; ``port`` itself means ``"group"``).
    ``replies=False`` keeps the transmit ports but turns reply delivery off: the
    kernel discards whatever unicast reaches a transmit socket before queueing it,
    nothing reads those sockets, and :attr:`EndpointStats.replies_refused` counts
    the discarded datagrams. Replies are queued apart from group traffic in every
    subscription, so a reply flood never evicts group datagrams.
    ``tos`` sets the IPv4 TOS byte or IPv6 traffic class of everything sent (DSCP d is
    ``d << 2``: EF is 184). ``source_address`` sends from that address of this host,
    only out of the interface holding it (``fe80::1%eth1`` names one for link-local).

    ``keepalive`` (on by default) keeps the memberships alive on snooping
    switches when no querier's queries reach this host: when the host has not
    reported on an interface for that many seconds (``True``: 60 s) because it
    accepted no query there, the keeper makes it report again, never with a
    Leave. ``False`` turns it off. See :attr:`keepalive_state` and
    docs/how-to/multicast-stops-after-a-few-minutes.md.
    """

    def __init__(
        self,
        group: str | Sequence[str],
        port: int,
        *,
        interfaces: InterfaceSelector = None,
        ttl: int = 1,
        loopback: bool = False,
        queue_size: int = 1024,
        snapshot_source: SnapshotSource | None = None,
        sources: Sequence[str] | None = None,
        watch: bool = True,
        poll_interval: float = 1.0,
        netlink: bool = True,
        on_interface_event: Callable[[InterfaceEvent], None] | None = None,
        receive_buffer: int | None = DEFAULT_RECEIVE_BUFFER,
        receive_ttl: bool = False,
        source_port: str | int = "ephemeral",
        keepalive: bool | float = True,
        coalesce_delay: float = DEFAULT_COALESCE_DELAY,
        join: bool = True,
        replies: bool = True,
        tos: int | None = None,
        source_address: str | None = None,
    ) -> None:
        # Checked here, at the call that received them, not when start() uses them.
        opts = EndpointOptions.build(
            group,
            port,
            interfaces=interfaces,
            ttl=ttl,
            loopback=loopback,
            queue_size=queue_size,
            snapshot_source=snapshot_source,
            sources=sources,
            watch=watch,
            poll_interval=poll_interval,
            netlink=netlink,
            on_interface_event=on_interface_event,
            receive_buffer=receive_buffer,
            receive_ttl=receive_ttl,
            source_port=source_port,
            keepalive=keepalive,
            coalesce_delay=coalesce_delay,
            join=join,
            replies=replies,
            tos=tos,
            source_address=source_address,
        )
        self._engine = Engine(opts)
        # Bound once: the public send methods are measured against bare sendto calls.
        self._send_all_nowait = self._engine.tx.send_all_nowait

    @property
    def port(self) -> int:
        return self._engine.options.port

    @property
    def sources(self) -> tuple[str, ...]:
        """The allowed senders of a source-specific endpoint; ``()`` means any sender."""
        return self._engine.options.sources

    @property
    def family(self) -> socket.AddressFamily:
        return self._engine.options.group.family

    @property
    def source_port(self) -> str | int:
        """``"ephemeral"``, ``"group"`` or a port: where copies leave from (see the class doc)."""
        opts = self._engine.options
        return opts.origin.port or opts.source_port

    @property
    def closed(self) -> bool:
        return self._engine.state == "closed"

    @property
    def interfaces(self) -> tuple[Interface, ...]:
        """The interfaces this endpoint currently receives and sends on."""
        return self._engine.links.interfaces

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        """Open the sockets and join the group on every selected interface."""
        state = self._engine.state
        if state == "open":
            return
        if state == "closed":
            raise EndpointClosedError("this endpoint was closed; create a new one")
        if state == "starting":
            # Another start() is under way: this one returns when that one does.
            await self._engine.wait_open()
            return
        loop = asyncio.get_running_loop()
        # Before anything opens: a loop without add_reader (Windows' Proactor) cannot run it.
        require_readers(loop)
        await self._engine.open(loop)

    async def aclose(self) -> None:
        """Leave the group, close every socket and end every iterator. Idempotent."""
        # Release everything first: nothing the watcher did can keep sockets open.
        if self._engine.state != "closed":
            self._engine.close()
        # Also after a synchronous _teardown() (MulticastTransport.close): wait for
        # the cancelled watcher task to finish, if this endpoint was the last to use
        # the loop's host monitor. Does nothing the second time.
        await self._engine.wait_stopped()

    def _teardown(self) -> None:
        """Release everything now, without waiting (MulticastTransport.close)."""
        self._engine.close()

    async def __aenter__(self) -> MulticastEndpoint:
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
        names = ",".join(i.name for i in self.interfaces)
        groups = ",".join(self.groups)
        mode = "" if self.joins else " send-only"
        return f"<MulticastEndpoint {groups}:{self.port}{mode} {self._engine.state} [{names}]>"

    # -- watching and keeping ------------------------------------------------------

    @property
    def watch_mode(self) -> str:
        """How interface changes are followed: ``"netlink"``, ``"poll"`` or ``"off"``.

        ``"stopped"`` once the endpoint is closed, or if the watcher ended on an
        application error (an ``interfaces=`` predicate that raised), which is
        reported through the event loop's exception handler.
        """
        return self._engine.watch_mode

    @property
    def host_monitor(self) -> HostMonitorState | None:
        """The event loop's host monitor this endpoint follows interfaces with.

        One per loop (and per ``netlink``/``poll_interval`` choice), shared by every
        watching endpoint in it: how many use it, its mode and the netlink
        notifications and rounds it has seen. ``None`` when not watching or not open.
        """
        return self._engine.monitor_state()

    def interface_events(self, queue_size: int = 64) -> InterfaceEventStream:
        """An async iterator of the changes to this endpoint's interfaces from now on.

        It ends when the endpoint closes. The interfaces in use at any moment are
        :attr:`interfaces`; events only describe changes.
        """
        if self._engine.state == "closed":
            raise EndpointClosedError("this endpoint was closed; create a new one")
        return self._engine.readers.event_stream(validate_queue_size(queue_size))

    @property
    def keepalive(self) -> float | None:
        """The keeper's refresh interval in seconds, or ``None`` when it is off."""
        return self._engine.options.keepalive

    @property
    def keepalive_state(self) -> tuple[KeepaliveState, ...]:
        """What the membership keeper does on each joined interface (empty when off)."""
        return self._engine.keepalive_states()

    # -- receiving -----------------------------------------------------------------

    def subscribe(self, queue_size: int | None = None) -> Subscription:
        """A new independent reader; ``async for dgram in ep`` makes one implicitly.

        Datagrams that arrive before the first subscriber exists are not kept, so
        subscribe before sending a request whose answers you want. A subscription
        ends when closed, when the endpoint closes, or when it is garbage-collected
        (as after ``break`` out of ``async for dgram in ep``).
        """
        if self._engine.state != "open":
            raise EndpointClosedError(
                "subscribe() needs a started endpoint: use 'async with' or await start()"
            )
        default = self._engine.options.queue_size
        size = default if queue_size is None else validate_queue_size(queue_size)
        return self._engine.readers.subscribe(size)

    def _attach(self, sub: Subscription) -> Callable[..., None]:
        """Feed ``sub`` (made elsewhere, e.g. by DualStackEndpoint); returns the detach."""
        return self._engine.readers.attach(sub)

    def __aiter__(self) -> Subscription:
        return self.subscribe()

    def batches(
        self, queue_size: int | None = None, *, max_batch: int | None = None
    ) -> BatchSubscription:
        """A new independent reader that yields lists of datagrams: ``async for batch in ...``.

        Each list holds everything queued since the last one (at most ``max_batch``),
        oldest first, never empty. The queue is bounded and drops the oldest
        datagrams exactly as :meth:`subscribe` does; ``dropped`` counts them.
        """
        max_batch = validate_max_batch(max_batch)
        return BatchSubscription(self.subscribe(queue_size), max_batch)

    def _add_sink(self, sink: Sink) -> None:
        self._engine.receive.add_sink(sink)

    @property
    def stats(self) -> EndpointStats:
        engine = self._engine
        r = engine.receive
        return EndpointStats(
            r.received,
            r.not_for_group,
            r.truncated,
            engine.readers.drops.total,
            r.drops.total,
            engine.replies.count,
            engine.replies.off_link,
            engine.replies.refused,
        )
