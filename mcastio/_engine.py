"""The parts of one endpoint, wired together and to the event loop.

:class:`MulticastEndpoint` is the public face; this is what runs behind it. It
builds :mod:`._membership` (joins), :mod:`._transmit` (sends), :mod:`._links`
(interfaces kept whole), :mod:`._receive` and :mod:`._replies` (reads),
:mod:`._readers` (subscriptions), :mod:`._watcher` (interface changes) and
:mod:`._keepalive` (the membership keeper), watches their sockets, and opens and
closes them together.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ._discovery import read_snapshot
from ._enginegroups import EngineGroups
from ._errors import EndpointClosedError, MulticastError
from ._groupset import GroupMemberships
from ._hostmonitor import HostMonitor, HostMonitorState, monitor_for
from ._hostread import read_off_loop
from ._links import Links
from ._model import (
    Group,
    Interface,
    InterfaceSelector,
    Plan,
    ineligibility,
    select_for_groups,
)
from ._options import EndpointOptions, SnapshotSource
from ._platform import capabilities
from ._readers import Readers
from ._receive import ReceivePath
from ._replies import Replies
from ._sockwatch import SocketWatch
from ._transmit import TransmitPool
from ._turns import take_turn, turn_due
from ._txsocket import SendOptions
from ._watch import InterfaceEvent
from ._watcher import Watcher

if TYPE_CHECKING:
    from ._keepalive import Keepalive

__all__ = ["Engine"]

_log = logging.getLogger("mcastio")


class Engine(EngineGroups):
    """Everything an endpoint runs: built closed, opened once, closed once."""

    def __init__(self, options: EndpointOptions) -> None:
        opts = self.options = options
        group = opts.group
        self.snapshot_source: SnapshotSource = opts.snapshot_source or read_snapshot
        self.loop: asyncio.AbstractEventLoop | None = None
        self.state = "new"  # new -> open -> closed
        self.receive = ReceivePath(group, opts.port)
        self.receive.groups = opts.groups
        self.readers = Readers(self.receive, opts.on_interface_event)
        self.replies = Replies(self.receive, lambda: self.links.interfaces, routed=opts.ttl > 1)
        self.watching = SocketWatch(
            self.receive, self.replies, opts.coalesce_delay, refuse_replies=not opts.replies
        )
        self._socket_readers = self.watching.readers
        self.tx = TransmitPool(
            group,
            opts.port,
            SendOptions.of(opts),
            on_open=self.watching.replies,
            on_close=self.watching.forget,
            owners=self.replies.owners,
        )
        self.tx.set_groups(opts.groups)
        caps = capabilities()
        self.memberships = GroupMemberships(
            opts.groups,
            opts.port,
            opts.sources,
            opts.receive_buffer,
            receive_ttl=opts.receive_ttl,
            join=opts.join,
            on_open=self.watching.receiver,
            on_close=self.watching.forget,
            holds=self.receive.holds,
            # No arrival interface per datagram: a socket per interface says it.
            portable=None if caps.datagram_interface else (caps.platform, self.receive.portable),
        )
        self.links = Links(group.family, self.memberships, self.tx, self.receive)
        # One keeper per group, each refreshing that group's memberships; none
        # for a send-only endpoint, which holds no membership to keep.
        self.keepalives: dict[Group, Keepalive] = {}
        if self._keeps():
            for g in opts.groups:
                self.keepalives[g] = self._keeper(g)
        # The loop's shared host monitor, from open() until close().
        self.monitor: HostMonitor | None = None
        self._watch_failed = False
        # The monitor's watcher when this endpoint was its last user: aclose() waits for it.
        self._stopping: HostMonitor | None = None
        # Set when open() is under way: a second start() waits for it.
        self._opened: asyncio.Future[None] | None = None
        # A watching endpoint may start with no usable interface; an owner that
        # must know at start (DualStackEndpoint: run without that family) sets this.
        self.require_interface_at_start = False

    # -- opening and closing -------------------------------------------------------

    @property
    def groups(self) -> tuple[Group, ...]:
        return self.memberships.groups

    def _desired(self, snapshot: Sequence[Interface], *, missing_ok: bool) -> tuple[Interface, ...]:
        opts = self.options
        chosen = select_for_groups(snapshot, self.groups, opts.selector, missing_ok=missing_ok)
        # A source address keeps only the interfaces holding it.
        return opts.origin.narrow(snapshot, chosen, self.groups[0], missing_ok=missing_ok)

    @property
    def watcher(self) -> Watcher | None:
        """The watcher this endpoint follows interfaces with (shared in the loop)."""
        return self.monitor.watcher if self.monitor is not None else None

    @property
    def watch_mode(self) -> str:
        if not self.options.watch:
            return "off"
        if self.monitor is None or self._watch_failed:
            return "stopped"
        return self.monitor.watcher.mode

    def monitor_state(self) -> HostMonitorState | None:
        return self.monitor.state() if self.monitor is not None else None

    def watch_failed(self) -> None:
        """The monitor dropped this endpoint after a bug in its reconcile."""
        self._watch_failed = True

    async def open(self, loop: asyncio.AbstractEventLoop) -> None:
        """Join on every selected interface and start following changes.

        The joins yield to the loop every few milliseconds, so starting many
        endpoints (or one on a thousand links) never holds the loop for long.
        """
        self.loop = self.watching.loop = loop
        self.state = "starting"
        opened = self._opened = loop.create_future()
        try:
            await self._open(loop)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                opened.cancel()
            elif not opened.done():
                opened.set_exception(exc)
                opened.exception()  # Retrieved: only other start() calls wait on it.
            raise
        opened.set_result(None)

    async def _open(self, loop: asyncio.AbstractEventLoop) -> None:
        # Many starts gathered: each begins with the loop's turn if one is due.
        await take_turn(loop)
        if self.state != "starting":
            raise EndpointClosedError("the endpoint was closed while it started")
        monitor = None
        rounds = 0
        if self.options.watch:
            monitor = self.monitor = monitor_for(
                loop, self.options.netlink, self.options.poll_interval
            )
            # Subscribed before reading, so a change right after the read is not missed.
            monitor.attach(self)
            rounds = monitor.watcher.rounds
        try:
            snapshot = await self._read_host(loop, monitor)
            # Starts that shared one reading resume in one pass: each waits its turn.
            await take_turn(loop)
            if self.state != "starting":
                raise EndpointClosedError("the endpoint was closed while it started")
            desired = self._desired(snapshot, missing_ok=False)
            if not desired:
                why = _explain_no_interfaces(snapshot, self.groups, self.options.selector)
                if monitor is None or self.require_interface_at_start:
                    raise MulticastError(why)
                _log.warning("%s\nwaiting for an interface to become usable", why)
        except BaseException as exc:
            self._detach()
            if self.state == "starting":
                self.state = "new"  # Nothing was opened: start() may be tried again.
            if isinstance(exc, asyncio.CancelledError):
                # Cancelled while reading the host: that reading (its thread) ends
                # first, so nothing of this start outlives it.
                await self.wait_stopped()
            raise
        self.tx.bind(loop)
        try:
            failures = await self._join_at_start(desired)
            self.state = "open"
            if monitor is not None:
                monitor.started(self, snapshot, rounds)
                if failures:
                    monitor.watcher.trigger()
            for keeper in list(self.keepalives.values()):
                await take_turn(loop)
                if self.state != "open":
                    raise EndpointClosedError("the endpoint was closed while it started")
                keeper.start(loop)
        except BaseException:
            self.close()
            raise

    async def _read_host(
        self, loop: asyncio.AbstractEventLoop, monitor: HostMonitor | None
    ) -> Sequence[Interface]:
        # mcastio's own reader runs on a thread (a user's source stays on the loop).
        off_loop = self.snapshot_source is read_snapshot
        try:
            if monitor is not None:
                return await monitor.snapshot_at_start(self.snapshot_source, off_loop)
            if off_loop:
                return await read_off_loop(loop, read_snapshot)
            return self.snapshot_source()
        except OSError as exc:
            raise MulticastError(f"cannot read the interfaces: {exc}") from exc

    async def wait_open(self) -> None:
        """Wait for the start under way; raise what it raised."""
        if self._opened is not None:
            await asyncio.shield(self._opened)

    def _detach(self) -> None:
        monitor, self.monitor = self.monitor, None
        if monitor is not None and monitor.detach(self):
            self._stopping = monitor

    async def wait_stopped(self) -> None:
        """Wait for the watcher task this endpoint stopped, if it was the last to use it."""
        monitor, self._stopping = self._stopping, None
        if monitor is not None:
            await monitor.stop()

    async def _join_at_start(self, desired: Sequence[Interface]) -> list[MulticastError]:
        failures: list[MulticastError] = []
        assert self.loop is not None
        for iface in desired:
            # New at start: nothing to diff against (plan_changes would, 4,096 times).
            failures += self.links.apply(Plan(add=(iface,)), derive=False)
            if not turn_due(self.loop):
                continue
            # Whole before the loop runs: a datagram read meanwhile finds its link's name.
            self.links.derive_names()
            await take_turn(self.loop)
            if self.state != "starting":
                # aclose() ran meanwhile, and released everything joined so far.
                raise EndpointClosedError("the endpoint was closed while it started")
        self.links.derive_names()
        first = failures[0] if failures else None
        # Joins refused on every usable interface are a setup error (too many
        # sources, a port in use, no descriptors left): fail at once, saying why.
        what = ", ".join(map(str, self.groups))
        if desired and not self.links:
            raise MulticastError(f"could not join {what} on any interface: {first}") from first
        if failures and not self.options.watch:
            # Nothing would ever retry them, so the endpoint would stay partial unseen.
            raise MulticastError(
                f"could not use {len(failures)} of {len(desired)} interfaces for "
                f"{what} (watch=False: nothing would retry them):\n"
                + "\n".join(f"  {exc}" for exc in failures)
            ) from first
        return failures

    def close(self) -> None:
        """Release every socket and end every reader at once (the watcher task ends later)."""
        self.state = "closed"
        self._detach()
        for keeper in self.keepalives.values():
            keeper.close()
        self.readers.close()
        self.links.close()

    # -- following changes ---------------------------------------------------------

    def reconcile(
        self, reannounce: frozenset[int] = frozenset(), snapshot: Sequence[Interface] | None = None
    ) -> bool:
        """Bring the memberships in line with ``snapshot`` (default: a fresh read);
        False if something failed."""
        if self.state != "open":
            return True
        if snapshot is None:
            try:
                snapshot = self.snapshot_source()
            except OSError as exc:
                _log.warning("cannot read the interfaces, will retry: %s", exc)
                return False
        # A named interface that is missing is simply not wanted yet, not an error.
        desired = self._desired(snapshot, missing_ok=True)
        failures, events = self.links.reconcile(desired, reannounce)
        self.emit(events)
        return not failures

    def emit(self, events: Sequence[InterfaceEvent]) -> None:
        self.readers.emit(", ".join(map(str, self.groups)), events, self.loop)


def _explain_no_interfaces(
    snapshot: Sequence[Interface], groups: Sequence[Group], selector: InterfaceSelector
) -> str:
    lines = [f"no interface can carry {', '.join(map(str, groups))}:"]
    for iface in snapshot:
        why = sorted({w for g in groups for w in ineligibility(iface, g)})
        lines.append(f"  {iface.name}: {', '.join(why) or 'excluded by the interfaces= selector'}")
    if selector is not None:
        lines.append("  (an interfaces= selector was given)")
    return "\n".join(lines)
