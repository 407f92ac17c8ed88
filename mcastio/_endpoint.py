"""``MulticastEndpoint``: receive on every interface, send out of every interface."""

from __future__ import annotations

import asyncio
import logging
import socket
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType

from . import _net
from ._discovery import read_snapshot
from ._errors import EndpointClosedError, MembershipLimitError, MulticastError
from ._fastpath import DATAGRAM_SLOT_SETTERS, OkResults
from ._model import (
    MAX_PAYLOAD_V4,
    MAX_PAYLOAD_V6,
    Datagram,
    Group,
    Interface,
    InterfaceSelector,
    Plan,
    SendResult,
    ineligibility,
    parse_group,
    plan_changes,
    select_interfaces,
    validate_max_batch,
    validate_payload,
    validate_port,
    validate_queue_size,
    validate_receive_buffer,
    validate_sources,
    validate_ttl,
)
from ._stream import DropTally
from ._subscription import BatchSubscription, Subscription
from ._watch import InterfaceEvent, desired_interfaces, interface_events
from ._watcher import InterfaceEventStream, Watcher

__all__ = ["EndpointStats", "MulticastEndpoint"]

_log = logging.getLogger("mcastio")

# Datagrams read per readiness event before yielding to other tasks: large enough
# to amortise the event-loop turn, small enough not to starve consumers.
_DRAIN_BUDGET = 256
# Distinct arrival ancillary blocks remembered per endpoint (one per interface and
# destination in practice); the cache is emptied when it would grow past this.
_ARRIVALS_LIMIT = 1024
# A bytes payload up to this size is valid for every group, so send_all skips the checks.
_FITS_ANY_GROUP = min(MAX_PAYLOAD_V4, MAX_PAYLOAD_V6)
#: SO_RCVBUF requested per receive socket: ~2500 small datagrams, so a flood survives
#: the consumer being descheduled for tens of milliseconds (capped by net.core.rmem_max).
DEFAULT_RECEIVE_BUFFER = 2 * 1024 * 1024

SnapshotSource = Callable[[], Sequence[Interface]]
Sink = Callable[[list[Datagram]], None]


@dataclass(frozen=True, slots=True)
class EndpointStats:
    """Counters since the endpoint started."""

    received: int
    #: Datagrams that reached the port but were not sent to the group (unicast,
    #: broadcast): not group traffic, so never handed to subscribers.
    not_for_group: int
    #: Datagrams larger than the receive buffer, discarded.
    truncated: int
    #: Datagrams dropped from full subscriber queues, summed over subscribers.
    dropped: int


class _Receiver:
    """One receive socket and the interfaces joined on it."""

    __slots__ = ("joined", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.joined: set[int] = set()


class _Member:
    """One joined interface: its receive socket and its transmit socket."""

    __slots__ = ("iface", "ok", "receiver", "send", "tx", "writable")

    def __init__(self, iface: Interface, receiver: _Receiver, tx: socket.socket) -> None:
        self.receiver = receiver
        self.tx = tx
        # Set while a send waits for this socket to drain (see _send_when_writable).
        self.writable: asyncio.Future[None] | None = None
        self.update(iface, tx)

    def update(self, iface: Interface, tx: socket.socket | None = None) -> None:
        self.iface = iface
        if tx is not None:
            self.tx = tx
        # Bound once here, not looked up on every send: send_all is measured
        # against bare sendto calls.
        self.send = self.tx.sendto
        self.ok = OkResults(iface.name)


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
    ) -> None:
        self._group = parse_group(group)
        self._group_str = str(self._group)
        self._sources = validate_sources(self._group, sources)
        # The pktinfo destination is compared as inet_ntop text: the same function on
        # both sides keeps the comparison canonical for any spelling of an IPv6 group.
        self._wire_group = socket.inet_ntop(self._group.family, self._group.address.packed)
        self._port = validate_port(port)
        self._ttl = validate_ttl(ttl)
        self._loopback = bool(loopback)
        self._queue_size = validate_queue_size(queue_size)
        if isinstance(interfaces, str):
            raise ValueError(f"interfaces must be a list of names, not the string {interfaces!r}")
        self._selector = interfaces
        self._snapshot_source: SnapshotSource = snapshot_source or read_snapshot
        self._dest: tuple[str, int] = (self._group_str, self._port)

        self._loop: asyncio.AbstractEventLoop | None = None
        self._state = "new"  # new -> open -> closed
        self._receivers: list[_Receiver] = []
        self._members: dict[int, _Member] = {}
        # A live view, kept so the send path skips one method call per datagram.
        self._member_view = self._members.values()
        self._names: dict[int, str] = {}
        self._subs: dict[int, weakref.ref[Subscription]] = {}
        # Called with every batch; a tuple, so a sink added or removed while a
        # batch is handed out does not disturb that loop.
        self._sinks: tuple[Sink, ...] = ()
        self._received = 0
        self._not_for_group = 0
        self._truncated = 0
        self._drops = DropTally()
        self._watcher: Watcher | None = None
        if watch:
            self._watcher = Watcher(self._reconcile, netlink=netlink, poll_interval=poll_interval)
        self._on_interface_event = on_interface_event
        # A watching endpoint may start with no usable interface; an owner that
        # must know at start (DualStackEndpoint: run without that family) sets this.
        self._require_interface_at_start = False
        self._event_streams: weakref.WeakSet[InterfaceEventStream] = weakref.WeakSet()
        # Receive/send hot-path caches, see _on_readable and send_all_nowait.
        self._arrivals: dict[tuple[int, int, bytes], int] = {}
        self._receive_buffer = validate_receive_buffer(receive_buffer)

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
    def closed(self) -> bool:
        return self._state == "closed"

    @property
    def interfaces(self) -> tuple[Interface, ...]:
        """The interfaces this endpoint currently receives and sends on."""
        return tuple(m.iface for _, m in sorted(self._members.items()))

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
            snapshot = self._snapshot_source()
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
        try:
            failures = self._apply(plan_changes({}, desired, self._group.family))
            # Joins refused on every usable interface are a setup error (too many
            # sources, a cap): a retry would not fix them, so fail at once.
            if desired and not self._members:
                raise MulticastError(f"could not join {self._group_str} on any interface") from (
                    failures[0] if failures else None
                )
            if watcher is not None:
                watcher.seed(snapshot)
                watcher.start(self._loop)
                if failures:
                    watcher.trigger()
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
        for stream in list(self._event_streams):
            stream._end()
        self._event_streams.clear()
        for ref in list(self._subs.values()):
            sub = ref()
            if sub is not None:
                sub._on_close = None
                sub._end()
        self._subs.clear()
        self._sinks = ()
        for member in self._members.values():
            self._close_tx(member)
        self._members.clear()
        for receiver in self._receivers:
            if self._loop is not None:
                self._loop.remove_reader(receiver.sock.fileno())
            # Closing the socket drops its memberships; the kernel sends the leaves.
            receiver.sock.close()
        self._receivers.clear()

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
        names = ",".join(m.iface.name for m in self._members.values())
        return f"<MulticastEndpoint {self._group_str}:{self._port} {self._state} [{names}]>"

    # -- membership ----------------------------------------------------------------

    def _apply(self, plan: Plan) -> list[MulticastError]:
        """Carry out ``plan``, all-or-nothing per interface; return the failures."""
        failures: list[MulticastError] = []
        for iface in plan.remove:
            self._drop_member(iface.index)
            _log.info("left %s on %s (index %d)", self._group_str, iface.name, iface.index)
        for old, new in plan.change:
            member = self._members[old.index]
            try:
                tx = _net.open_sender(self._group, new, self._ttl, self._loopback)
            except MulticastError as exc:
                _log.warning("keeping the old transmit socket on %s: %s", new.name, exc)
                failures.append(exc)
                continue
            self._close_tx(member)
            member.update(new, tx)
            _log.info("updated %s (index %d) for %s", new.name, new.index, self._group_str)
        for iface in plan.refresh:
            self._members[iface.index].update(iface)
        for iface in plan.add:
            try:
                self._add_member(iface)
            except MulticastError as exc:
                _log.warning("could not use %s for %s: %s", iface.name, self._group_str, exc)
                failures.append(exc)
            else:
                _log.info("joined %s on %s (index %d)", self._group_str, iface.name, iface.index)
        # Derived, never patched: the receive path's index -> name lookup.
        self._names = {idx: m.iface.name for idx, m in self._members.items()}
        return failures

    def _add_member(self, iface: Interface) -> None:
        receiver = self._join_somewhere(iface)
        try:
            tx = _net.open_sender(self._group, iface, self._ttl, self._loopback)
        except BaseException:
            # Receiving without being able to send would be half an interface.
            self._leave(receiver, iface)
            raise
        self._members[iface.index] = _Member(iface, receiver, tx)

    def _join_somewhere(self, iface: Interface) -> _Receiver:
        for receiver in self._receivers:
            try:
                _net.join(receiver.sock, self._group, iface, self._sources)
            except MembershipLimitError:
                continue
            receiver.joined.add(iface.index)
            return receiver
        # Every socket is at the kernel's per-socket cap: spread onto a new one,
        # since datagrams reach only the socket holding the (group, ifindex) membership.
        receiver = self._open_receiver()
        try:
            _net.join(receiver.sock, self._group, iface, self._sources)
        except BaseException:
            self._close_receiver_if_empty(receiver)
            raise
        receiver.joined.add(iface.index)
        return receiver

    def _open_receiver(self) -> _Receiver:
        assert self._loop is not None
        receiver = _Receiver(_net.open_receiver(self._group, self._port, self._receive_buffer))
        self._receivers.append(receiver)
        self._loop.add_reader(receiver.sock.fileno(), self._on_readable, receiver.sock)
        return receiver

    def _close_receiver_if_empty(self, receiver: _Receiver) -> None:
        if receiver.joined or receiver not in self._receivers:
            return
        self._receivers.remove(receiver)
        if self._loop is not None:
            self._loop.remove_reader(receiver.sock.fileno())
        receiver.sock.close()

    def _leave(self, receiver: _Receiver, iface: Interface) -> None:
        receiver.joined.discard(iface.index)
        try:
            _net.leave(receiver.sock, self._group, iface, self._sources)
        except MulticastError as exc:
            _log.warning("%s", exc)
        self._close_receiver_if_empty(receiver)

    def _drop_member(self, index: int) -> None:
        member = self._members.pop(index)
        self._close_tx(member)
        self._leave(member.receiver, member.iface)

    # -- watching ------------------------------------------------------------------

    @property
    def watch_mode(self) -> str:
        """How interface changes are followed: ``"netlink"``, ``"poll"`` or ``"off"``."""
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
        stream = InterfaceEventStream(validate_queue_size(queue_size))
        stream._on_close = self._event_streams.discard
        self._event_streams.add(stream)
        return stream

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
        before = {idx: m.iface for idx, m in self._members.items()}
        plan = plan_changes(before, desired, self._group.family)
        failures = self._apply(plan) if plan else []
        fresh = {i.index for i in plan.add}
        for idx in sorted(reannounce):
            if idx in self._members and idx not in fresh:
                try:
                    self._reannounce(idx)
                except MulticastError as exc:
                    _log.warning("could not re-announce %s: %s", self._group_str, exc)
                    failures.append(exc)
        after = {idx: m.iface for idx, m in self._members.items()}
        self._emit(interface_events(before, after))
        return not failures

    def _reannounce(self, index: int) -> None:
        """Leave and re-join on one interface, so the kernel sends a fresh report.

        Linux does not report memberships again when carrier returns, while a
        snooping switch forgot them when the link dropped.
        """
        member = self._members[index]
        _net.leave(member.receiver.sock, self._group, member.iface, self._sources)
        try:
            _net.join(member.receiver.sock, self._group, member.iface, self._sources)
        except MulticastError:
            # Now joined nowhere on this interface: drop it so the retry re-adds it whole.
            del self._members[index]
            self._close_tx(member)
            member.receiver.joined.discard(index)
            self._close_receiver_if_empty(member.receiver)
            raise
        _log.info(
            "re-announced %s on %s after carrier returned", self._group_str, member.iface.name
        )

    def _emit(self, events: Sequence[InterfaceEvent]) -> None:
        for event in events:
            _log.info("%s: interface %s", self._group_str, event)
            for stream in list(self._event_streams):
                stream._push(event)
            if self._on_interface_event is not None and self._loop is not None:
                # Run the callback on its own, so one that raises cannot stop the watcher.
                self._loop.call_soon(self._on_interface_event, event)

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
        sub = Subscription(size, self._drops)
        sub._on_close = self._attach(sub)
        return sub

    def _attach(self, sub: Subscription) -> Callable[..., None]:
        """Feed ``sub`` until it is closed or collected; returns the detach function.

        The endpoint holds it only weakly: an abandoned iterator must not be fed
        (and hold ``queue_size`` datagrams) for the endpoint's whole life.
        """
        key = id(sub)

        def detach(*_: object) -> None:
            if self._subs.pop(key, None) is not None:
                self._remove_sink(feed)

        ref = weakref.ref(sub, detach)

        def feed(batch: list[Datagram]) -> None:
            target = ref()
            if target is not None:
                target._feed(batch)

        self._subs[key] = ref
        # Ahead of any protocol sink: a protocol callback that raises ends that
        # batch's loop, and must not starve the subscriptions.
        self._sinks = (feed, *self._sinks)
        return detach

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
        self._sinks = (*self._sinks, sink)

    def _remove_sink(self, sink: Sink) -> None:
        self._sinks = tuple(s for s in self._sinks if s is not sink)

    @property
    def stats(self) -> EndpointStats:
        return EndpointStats(
            self._received, self._not_for_group, self._truncated, self._drops.total
        )

    def _on_readable(self, sock: socket.socket) -> None:
        batch: list[Datagram] = []
        append = batch.append
        recvmsg = sock.recvmsg
        bufsize, ancsize = _net.RECV_BUFSIZE, _net.ANC_BUFSIZE
        truncated = _net.MSG_TRUNC
        names = self._names
        arrivals = self._arrivals
        group = self._group_str
        new = object.__new__
        set_data, set_source, set_group, set_interface = DATAGRAM_SLOT_SETTERS
        for _ in range(_DRAIN_BUDGET):
            try:
                data, anc, flags, source = recvmsg(bufsize, ancsize)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                # An unconnected UDP socket has no peer errors to report; log and move on.
                _log.warning("receive error on %s:%d: %s", group, self._port, exc)
                break
            if flags & truncated:
                self._truncated += 1
                continue
            # Every datagram that arrives the same way carries the same pktinfo bytes,
            # so they are parsed once and looked up after that.
            if len(anc) == 1:
                index = arrivals.get(anc[0])
                if index is None:
                    index = self._learn_arrival(anc[0])
            else:
                index = self._arrival_index(anc)
            if index < 0:
                self._not_for_group += 1
                continue
            name = names.get(index)
            if name is None:
                name = _index_to_name(index)
            dgram = new(Datagram)
            set_data(dgram, data)
            set_source(dgram, source)
            set_group(dgram, group)
            set_interface(dgram, name)
            append(dgram)
        if batch:
            self._received += len(batch)
            for sink in self._sinks:
                sink(batch)

    def _arrival_index(self, anc: list[tuple[int, int, bytes]]) -> int:
        """The arrival ifindex, or -1 when the datagram was not sent to the group."""
        info = _net.parse_pktinfo(anc)
        if info is None or info[1] != self._wire_group:
            return -1
        return info[0]

    def _learn_arrival(self, cmsg: tuple[int, int, bytes]) -> int:
        index = self._arrival_index([cmsg])
        if len(self._arrivals) >= _ARRIVALS_LIMIT:
            self._arrivals.clear()
        self._arrivals[cmsg] = index
        return index

    # -- sending -------------------------------------------------------------------

    def _check_send(self, data: object) -> bytes | bytearray | memoryview:
        if self._state != "open":
            raise EndpointClosedError(
                "cannot send on an endpoint that is not open"
                + (" (it was closed)" if self._state == "closed" else "; await start() first")
            )
        return validate_payload(data, self._group)

    def send_all_nowait(self, data: bytes | bytearray | memoryview) -> tuple[SendResult, ...]:
        """Send one copy out of every current interface without waiting.

        A full socket buffer shows up as a ``BlockingIOError`` in that interface's result.
        """
        # The hot send path: written out flat, since every call here costs
        # measurably against a single sendto.
        if self._state != "open" or type(data) is not bytes or len(data) > _FITS_ANY_GROUP:
            data = self._check_send(data)
        results: list[SendResult] = []
        dest = self._dest
        for member in self._member_view:
            try:
                results.append(member.ok[member.send(data, dest)])
            except OSError as exc:
                results.append(SendResult(member.iface.name, exc))
        return tuple(results)

    async def send_all(self, data: bytes | bytearray | memoryview) -> tuple[SendResult, ...]:
        """Send one copy out of every current interface; one result per interface.

        A failure on one interface is reported in its result and never raises.
        """
        results = self.send_all_nowait(data)
        for result in results:
            if result.error is not None and isinstance(result.error, BlockingIOError):
                return await self._retry_blocked(results, data)
        return results

    async def _retry_blocked(
        self, results: tuple[SendResult, ...], data: bytes | bytearray | memoryview
    ) -> tuple[SendResult, ...]:
        # Called before any await since the round, so the members are the ones just used.
        # Every other interface already has its copy: a full buffer on one never
        # holds up the others.
        members = list(self._members.values())
        retried = list(results)
        for i, result in enumerate(results):
            if isinstance(result.error, BlockingIOError):
                retried[i] = await self._send_when_writable(members[i], data)
        return tuple(retried)

    def send_nowait(self, data: bytes | bytearray | memoryview, *, interface: str) -> SendResult:
        """Send one copy out of the named interface without waiting; errors are in the result."""
        payload = self._check_send(data)
        return self._send_member(self._member_named(interface), payload)

    async def send(self, data: bytes | bytearray | memoryview, *, interface: str) -> SendResult:
        """Send one copy out of the named interface; raises ``MulticastError`` on failure."""
        payload = self._check_send(data)
        member = self._member_named(interface)
        result = self._send_member(member, payload)
        if isinstance(result.error, BlockingIOError):
            result = await self._send_when_writable(member, payload)
        if result.error is not None:
            raise MulticastError(
                f"sending to {self._group_str}:{self._port} on {interface} failed: {result.error}"
            ) from result.error
        return result

    def _member_named(self, interface: str) -> _Member:
        for member in self._members.values():
            if member.iface.name == interface:
                return member
        current = ", ".join(m.iface.name for m in self._members.values()) or "none"
        raise ValueError(
            f"{interface!r} is not one of this endpoint's interfaces (current: {current})"
        )

    def _send_member(self, member: _Member, payload: bytes | bytearray | memoryview) -> SendResult:
        try:
            sent = member.tx.sendto(payload, self._dest)
        except OSError as exc:
            return SendResult(member.iface.name, exc)
        return SendResult(member.iface.name, None, sent)

    async def _send_when_writable(
        self, member: _Member, payload: bytes | bytearray | memoryview
    ) -> SendResult:
        assert self._loop is not None
        name = member.iface.name
        tx = member.tx
        if tx.fileno() == -1:
            return SendResult(name, _net.gone_error(name))
        waiter = member.writable
        if waiter is None:
            # asyncio keeps one writer per descriptor: concurrent senders share it.
            waiter = member.writable = self._loop.create_future()
            self._loop.add_writer(tx.fileno(), self._on_writable, member)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), 1.0)
        except asyncio.TimeoutError:
            return SendResult(name, _net.still_full_error())
        if member.tx is not tx or tx.fileno() == -1:
            return SendResult(name, _net.gone_error(name))
        return self._send_member(member, payload)

    def _on_writable(self, member: _Member) -> None:
        assert self._loop is not None
        self._loop.remove_writer(member.tx.fileno())
        waiter, member.writable = member.writable, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _close_tx(self, member: _Member) -> None:
        """Close a transmit socket, first waking anyone waiting for it to drain."""
        if member.writable is not None and self._loop is not None:
            # Unregister before close: a later socket may reuse the descriptor number.
            self._on_writable(member)
        member.tx.close()


def _index_to_name(index: int) -> str:
    try:
        return socket.if_indextoname(index)
    except OSError:
        return f"if{index}"


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
