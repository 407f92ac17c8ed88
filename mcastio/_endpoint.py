"""``MulticastEndpoint``: receive on every interface, send out of every interface.

A thin façade over cooperating parts: :mod:`._membership` (receive sockets and
joins), :mod:`._transmit` (one transmit socket per interface and the sends),
:mod:`._links` (the interfaces in use, kept whole), :mod:`._receive` (reading
datagrams), :mod:`._readers` (subscriptions and event streams) and
:mod:`._watcher` (following interface changes). This module owns the lifecycle,
the wiring between them and the public API.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType

from ._discovery import read_snapshot
from ._errors import EndpointClosedError, MulticastError
from ._keepalive import Keepalive
from ._keeper import KeepaliveState, validate_keepalive
from ._links import Links
from ._membership import Memberships
from ._model import (
    Group,
    Interface,
    InterfaceSelector,
    SendResult,
    ineligibility,
    parse_group,
    plan_changes,
    select_interfaces,
    validate_callback,
    validate_coalesce_delay,
    validate_flag,
    validate_max_batch,
    validate_poll_interval,
    validate_port,
    validate_queue_size,
    validate_receive_buffer,
    validate_selector,
    validate_source_port,
    validate_sources,
    validate_ttl,
)
from ._pacing import DEFAULT_COALESCE_DELAY, Drain, SocketReader
from ._readers import Readers
from ._receive import ReceivePath, Sink
from ._replies import Replies
from ._subscription import BatchSubscription, Subscription
from ._transmit import TransmitPool
from ._watch import InterfaceEvent, desired_interfaces
from ._watcher import InterfaceEventStream, Watcher

__all__ = ["DEFAULT_RECEIVE_BUFFER", "EndpointStats", "MulticastEndpoint", "SnapshotSource"]

_log = logging.getLogger("mcastio")

#: SO_RCVBUF requested per receive socket: ~2500 small datagrams, so a flood survives
#: the consumer being descheduled for tens of milliseconds (capped by net.core.rmem_max).
DEFAULT_RECEIVE_BUFFER = 2 * 1024 * 1024

SnapshotSource = Callable[[], Sequence[Interface]]


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
    #: (SO_RXQ_OVFL), as of the last datagram read from that socket.
    kernel_dropped: int = 0
    #: Replies delivered: unicast sent to a transmit socket (``Datagram.group`` is
    #: None); not counted in ``received``, which counts group datagrams.
    replies: int = 0


class MulticastEndpoint:
    """Join ``group`` on every eligible interface and send out of each of them.

    ``interfaces`` narrows the set: a list of names, or a predicate over
    :class:`Interface`. ``ttl`` (default 1) keeps traffic on the local links;
    ``loopback`` (default off) controls whether this host's own programs see what
    it sends. Each subscriber queues at most ``queue_size`` datagrams.
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
    bounds how long a flood waits unread to be read in batches (docs/performance.md).

    ``source_port="ephemeral"`` (the default) sends each copy from a port of its own
    and delivers unicast answers to it as replies (``Datagram.group`` is None);
    ``"group"`` sends from the group's port, as mDNS requires (docs/request-reply.md).

    ``keepalive`` (on by default) keeps the memberships alive on snooping
    switches when no querier's queries reach this host: when the host has not
    reported on an interface for that many seconds (``True``: 60 s) because it
    accepted no query there, the keeper makes it report again, never with a
    Leave. ``False`` turns it off. See :attr:`keepalive_state` and docs/keepalive.md.
    """

    def __init__(
        self,
        group: str,
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
        source_port: str = "ephemeral",
        keepalive: bool | float = True,
        coalesce_delay: float = DEFAULT_COALESCE_DELAY,
    ) -> None:
        self._group = parse_group(group)
        self._source_port = validate_source_port(source_port)
        self._group_str = str(self._group)
        self._sources = validate_sources(self._group, sources)
        self._port = validate_port(port)
        self._queue_size = validate_queue_size(queue_size)
        self._selector = validate_selector(interfaces)
        self._snapshot_source: SnapshotSource = snapshot_source or read_snapshot
        receive_buffer = validate_receive_buffer(receive_buffer)
        self._coalesce_delay = validate_coalesce_delay(coalesce_delay)
        self._socket_readers: dict[socket.socket, SocketReader] = {}
        # Checked here, at the call that received them, not when start() uses them.
        for name, flag in (
            ("loopback", loopback),
            ("watch", watch),
            ("netlink", netlink),
            ("receive_ttl", receive_ttl),
        ):
            validate_flag(name, flag)
        poll_interval = validate_poll_interval(poll_interval)
        validate_callback("on_interface_event", on_interface_event)
        validate_callback("snapshot_source", snapshot_source)

        self._loop: asyncio.AbstractEventLoop | None = None
        self._state = "new"  # new -> open -> closed
        self._receive = ReceivePath(self._group, self._port)
        self._readers = Readers(self._receive, on_interface_event)
        self._replies = Replies(self._receive)
        self._tx = TransmitPool(
            self._group,
            self._port,
            validate_ttl(ttl),
            bool(loopback),
            from_group_port=self._source_port == "group",
            on_open=self._watch_replies,
            on_close=self._unwatch_socket,
        )
        # Bound once: the public send methods are measured against bare sendto calls.
        self._send_all_nowait = self._tx.send_all_nowait
        self._memberships = Memberships(
            self._group,
            self._port,
            self._sources,
            receive_buffer,
            receive_ttl=bool(receive_ttl),
            on_open=self._watch_socket,
            on_close=self._unwatch_socket,
        )
        self._links = Links(self._group, self._memberships, self._tx, self._receive)
        interval = validate_keepalive(keepalive)
        self._keepalive: Keepalive | None = None
        if interval is not None:
            self._keepalive = Keepalive(self._group, self._sources, interval, self._joined)
        self._watcher: Watcher | None = None
        if watch:
            self._watcher = Watcher(self._reconcile, netlink=netlink, poll_interval=poll_interval)
        # A watching endpoint may start with no usable interface; an owner that
        # must know at start (DualStackEndpoint: run without that family) sets this.
        self._require_interface_at_start = False

    # -- lifecycle -----------------------------------------------------------------

    @property
    def group(self) -> str:
        return self._group_str

    @property
    def port(self) -> int:
        return self._port

    @property
    def sources(self) -> tuple[str, ...]:
        """The allowed senders of a source-specific endpoint; ``()`` means any sender."""
        return self._sources

    @property
    def family(self) -> socket.AddressFamily:
        return self._group.family

    @property
    def source_port(self) -> str:
        """``"ephemeral"`` or ``"group"``: where copies leave from (see the class doc)."""
        return self._source_port

    @property
    def closed(self) -> bool:
        return self._state == "closed"

    @property
    def interfaces(self) -> tuple[Interface, ...]:
        """The interfaces this endpoint currently receives and sends on."""
        return self._links.interfaces

    async def start(self) -> None:
        """Open the sockets and join the group on every selected interface."""
        if self._state == "open":
            return
        if self._state == "closed":
            raise EndpointClosedError("this endpoint was closed; create a new one")
        self._loop = asyncio.get_running_loop()
        watcher = self._watcher
        try:
            if watcher is not None:
                # Subscribe before reading, so a change right after the read is not missed.
                watcher.open()
            try:
                snapshot = self._snapshot_source()
            except OSError as exc:
                raise MulticastError(f"cannot read the interfaces: {exc}") from exc
            desired = select_interfaces(snapshot, self._group, self._selector)
        except BaseException:
            if watcher is not None:
                watcher.cancel()
            raise
        if not desired:
            why = _explain_no_interfaces(snapshot, self._group, self._selector)
            if watcher is None or self._require_interface_at_start:
                if watcher is not None:
                    watcher.cancel()
                raise MulticastError(why)
            _log.warning("%s\nwaiting for an interface to become usable", why)
        self._state = "open"
        self._tx.bind(self._loop)
        try:
            failures = self._links.apply(plan_changes({}, desired, self._group.family))
            first = failures[0] if failures else None
            # Joins refused on every usable interface are a setup error (too many
            # sources, a port in use, no descriptors left): fail at once, saying why.
            if desired and not self._links:
                raise MulticastError(
                    f"could not join {self._group_str} on any interface: {first}"
                ) from first
            if failures and watcher is None:
                # Nothing would ever retry them, so the endpoint would stay partial unseen.
                raise MulticastError(
                    f"could not use {len(failures)} of {len(desired)} interfaces for "
                    f"{self._group_str} (watch=False: nothing would retry them):\n"
                    + "\n".join(f"  {exc}" for exc in failures)
                ) from first
            if watcher is not None:
                watcher.seed(snapshot)
                watcher.start(self._loop)
                if failures:
                    watcher.trigger()
            if self._keepalive is not None:
                self._keepalive.start(self._loop)
        except BaseException:
            self._teardown()
            raise

    async def aclose(self) -> None:
        """Leave the group, close every socket and end every iterator. Idempotent."""
        # Release everything first: nothing the watcher did can keep sockets open.
        if self._state != "closed":
            self._teardown()
        # Also after a synchronous _teardown() (MulticastTransport.close): wait for
        # the cancelled watcher task to finish. Does nothing the second time.
        if self._watcher is not None:
            await self._watcher.stop()

    def _teardown(self) -> None:
        self._state = "closed"
        if self._watcher is not None:
            self._watcher.cancel()
        if self._keepalive is not None:
            self._keepalive.close()
        self._readers.close()
        self._links.close()

    def _watch_socket(self, sock: socket.socket) -> None:
        self._add_reader(sock, self._receive.drain, "a receive socket")
        self._receive.watch(sock)

    def _watch_replies(self, sock: socket.socket) -> None:
        self._add_reader(sock, self._replies.drain, "a transmit socket")

    def _add_reader(self, sock: socket.socket, drain: Drain, what: str) -> None:
        assert self._loop is not None
        reader = SocketReader(self._loop, sock, drain, self._coalesce_delay)
        try:
            reader.start()
        except OSError as exc:
            # epoll_ctl refuses past fs.epoll.max_user_watches (ENOSPC) or memory.
            raise MulticastError(f"cannot watch {what} for reading: {exc}") from exc
        self._socket_readers[sock] = reader

    def _unwatch_socket(self, sock: socket.socket) -> None:
        reader = self._socket_readers.pop(sock, None)
        if reader is not None:
            reader.stop()
        self._receive.forget(sock)

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
        names = ",".join(i.name for i in self._links.interfaces)
        return f"<MulticastEndpoint {self._group_str}:{self._port} {self._state} [{names}]>"

    # -- watching ------------------------------------------------------------------

    @property
    def watch_mode(self) -> str:
        """How interface changes are followed: ``"netlink"``, ``"poll"`` or ``"off"``.

        ``"stopped"`` once the endpoint is closed, or if the watcher ended on an
        application error (an ``interfaces=`` predicate that raised), which is
        reported through the event loop's exception handler.
        """
        if self._watcher is None:
            return "off"
        return self._watcher.mode

    def interface_events(self, queue_size: int = 64) -> InterfaceEventStream:
        """An async iterator of the changes to this endpoint's interfaces from now on.

        It ends when the endpoint closes. The interfaces in use at any moment are
        :attr:`interfaces`; events only describe changes.
        """
        if self._state == "closed":
            raise EndpointClosedError("this endpoint was closed; create a new one")
        return self._readers.event_stream(validate_queue_size(queue_size))

    # -- keepalive -----------------------------------------------------------------

    @property
    def keepalive(self) -> float | None:
        """The keeper's refresh interval in seconds, or ``None`` when it is off."""
        return self._keepalive.interval if self._keepalive is not None else None

    @property
    def keepalive_state(self) -> tuple[KeepaliveState, ...]:
        """What the membership keeper does on each joined interface (empty when off)."""
        if self._keepalive is None or self._state != "open":
            return ()
        return self._keepalive.states()

    def _joined(self) -> list[tuple[Interface, socket.socket]]:
        pairs = []
        for iface in self._links.interfaces:
            sock = self._memberships.socket_of(iface.index)
            if sock is not None:
                pairs.append((iface, sock))
        return pairs

    def _reconcile(self, reannounce: frozenset[int] = frozenset()) -> bool:
        """Bring the memberships in line with a fresh snapshot; False if something failed."""
        if self._state != "open":
            return True
        try:
            snapshot = self._snapshot_source()
        except OSError as exc:
            _log.warning("cannot read the interfaces, will retry: %s", exc)
            return False
        desired = desired_interfaces(snapshot, self._group, self._selector)
        failures, events = self._links.reconcile(desired, reannounce)
        self._emit(events)
        return not failures

    def _emit(self, events: Sequence[InterfaceEvent]) -> None:
        self._readers.emit(self._group_str, events, self._loop)

    # -- receiving -----------------------------------------------------------------

    def subscribe(self, queue_size: int | None = None) -> Subscription:
        """A new independent reader; ``async for dgram in ep`` makes one implicitly.

        Datagrams that arrive before the first subscriber exists are not kept, so
        subscribe before sending a request whose answers you want. A subscription
        ends when closed, when the endpoint closes, or when it is garbage-collected
        (as after ``break`` out of ``async for dgram in ep``).
        """
        if self._state != "open":
            raise EndpointClosedError(
                "subscribe() needs a started endpoint: use 'async with' or await start()"
            )
        size = self._queue_size if queue_size is None else validate_queue_size(queue_size)
        return self._readers.subscribe(size)

    def _attach(self, sub: Subscription) -> Callable[..., None]:
        """Feed ``sub`` (made elsewhere, e.g. by DualStackEndpoint); returns the detach."""
        return self._readers.attach(sub)

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
        self._receive.add_sink(sink)

    @property
    def stats(self) -> EndpointStats:
        r = self._receive
        return EndpointStats(
            r.received,
            r.not_for_group,
            r.truncated,
            self._readers.drops.total,
            r.kernel_dropped,
            self._replies.count,
        )

    # -- sending -------------------------------------------------------------------

    def send_all_nowait(self, data: bytes | bytearray | memoryview) -> tuple[SendResult, ...]:
        """Send one copy out of every current interface without waiting.

        A full socket buffer shows up as a ``BlockingIOError`` in that interface's result.
        """
        return self._send_all_nowait(data)

    async def send_all(self, data: bytes | bytearray | memoryview) -> tuple[SendResult, ...]:
        """Send one copy out of every current interface; one result per interface.

        A failure on one interface is reported in its result and never raises.
        """
        return await self._tx.send_all(data)

    def send_nowait(self, data: bytes | bytearray | memoryview, *, interface: str) -> SendResult:
        """Send one copy out of the named interface without waiting; errors are in the result."""
        return self._tx.send_nowait(data, interface)

    async def send(self, data: bytes | bytearray | memoryview, *, interface: str) -> SendResult:
        """Send one copy out of the named interface; raises ``MulticastError`` on failure."""
        return await self._tx.send(data, interface)


def _explain_no_interfaces(
    snapshot: Sequence[Interface], group: Group, selector: InterfaceSelector
) -> str:
    lines = [f"no interface can carry {group}:"]
    for iface in snapshot:
        why = ineligibility(iface, group)
        lines.append(f"  {iface.name}: {', '.join(why) or 'excluded by the interfaces= selector'}")
    if selector is not None:
        lines.append("  (an interfaces= selector was given)")
    return "\n".join(lines)
