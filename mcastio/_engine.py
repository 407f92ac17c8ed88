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
import dataclasses
import logging
import socket
from collections.abc import Sequence

from ._discovery import read_snapshot
from ._errors import EndpointClosedError, MulticastError
from ._groupset import GroupMemberships
from ._hostmonitor import HostMonitor, HostMonitorState, monitor_for
from ._keepalive import Keepalive
from ._keeper import KeepaliveState
from ._links import Links
from ._model import (
    Group,
    Interface,
    InterfaceSelector,
    ineligibility,
    is_eligible,
    parse_group,
    plan_changes,
    select_for_groups,
    validate_sources,
)
from ._options import EndpointOptions, SnapshotSource
from ._pacing import Drain, SocketReader
from ._readers import Readers
from ._receive import ReceivePath
from ._replies import Replies
from ._transmit import TransmitPool
from ._turns import take_turn
from ._watch import InterfaceEvent
from ._watcher import Watcher

__all__ = ["Engine"]

_log = logging.getLogger("mcastio")


class Engine:
    """Everything an endpoint runs: built closed, opened once, closed once."""

    def __init__(self, options: EndpointOptions) -> None:
        opts = self.options = options
        group = opts.group
        self.snapshot_source: SnapshotSource = opts.snapshot_source or read_snapshot
        self.loop: asyncio.AbstractEventLoop | None = None
        self.state = "new"  # new -> open -> closed
        self._socket_readers: dict[socket.socket, SocketReader] = {}
        self.receive = ReceivePath(group, opts.port)
        self.receive.groups = opts.groups
        self.readers = Readers(self.receive, opts.on_interface_event)
        self.replies = Replies(self.receive, lambda: self.links.interfaces, routed=opts.ttl > 1)
        self.tx = TransmitPool(
            group,
            opts.port,
            opts.ttl,
            opts.loopback,
            from_group_port=opts.source_port == "group",
            on_open=self._watch_replies,
            on_close=self._unwatch,
            origin=opts.origin,
        )
        self.tx.set_groups(opts.groups)
        self.memberships = GroupMemberships(
            opts.groups,
            opts.port,
            opts.sources,
            opts.receive_buffer,
            receive_ttl=opts.receive_ttl,
            join=opts.join,
            on_open=self._watch_receiver,
            on_close=self._unwatch,
            holds=self.receive.holds,
        )
        self.links = Links(group.family, self.memberships, self.tx, self.receive)
        # One keeper per group, each refreshing that group's memberships; none
        # for a send-only endpoint, which holds no membership to keep.
        self.keepalives: dict[Group, Keepalive] = {}
        if opts.keepalive is not None and opts.join:
            for g in opts.groups:
                self.keepalives[g] = self._keeper(g)
        # The loop's shared host monitor, from open() until close().
        self.monitor: HostMonitor | None = None
        self._watch_failed = False
        # The monitor's watcher when this endpoint was its last user: aclose() waits for it.
        self._stopping: Watcher | None = None
        # Set when open() is under way: a second start() waits for it.
        self._opened: asyncio.Future[None] | None = None
        # A watching endpoint may start with no usable interface; an owner that
        # must know at start (DualStackEndpoint: run without that family) sets this.
        self.require_interface_at_start = False

    # -- opening and closing -------------------------------------------------------

    def _keeper(self, group: Group) -> Keepalive:
        assert self.options.keepalive is not None
        return Keepalive(
            group,
            self.options.sources,
            self.options.keepalive,
            lambda: self._joined(group),
        )

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
        self.loop = loop
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
            try:
                if monitor is not None:
                    snapshot = monitor.snapshot(self.snapshot_source)
                else:
                    snapshot = self.snapshot_source()
            except OSError as exc:
                raise MulticastError(f"cannot read the interfaces: {exc}") from exc
            desired = self._desired(snapshot, missing_ok=False)
            if not desired:
                why = _explain_no_interfaces(snapshot, self.groups, self.options.selector)
                if monitor is None or self.require_interface_at_start:
                    raise MulticastError(why)
                _log.warning("%s\nwaiting for an interface to become usable", why)
        except BaseException:
            self._detach()
            if self.state == "starting":
                self.state = "new"  # Nothing was opened: start() may be tried again.
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

    async def wait_open(self) -> None:
        """Wait for the start under way; raise what it raised."""
        if self._opened is not None:
            await asyncio.shield(self._opened)

    def _detach(self) -> None:
        monitor, self.monitor = self.monitor, None
        if monitor is not None and monitor.detach(self):
            self._stopping = monitor.watcher

    async def wait_stopped(self) -> None:
        """Wait for the watcher task this endpoint stopped, if it was the last to use it."""
        watcher, self._stopping = self._stopping, None
        if watcher is not None:
            await watcher.stop()

    async def _join_at_start(self, desired: Sequence[Interface]) -> list[MulticastError]:
        failures: list[MulticastError] = []
        family = self.options.group.family
        assert self.loop is not None
        for iface in desired:
            failures += self.links.apply(plan_changes({}, (iface,), family))
            await take_turn(self.loop)
            if self.state != "starting":
                # aclose() ran meanwhile, and released everything joined so far.
                raise EndpointClosedError("the endpoint was closed while it started")
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

    # -- the sockets' readers ------------------------------------------------------

    def _watch_receiver(self, sock: socket.socket) -> None:
        self._add_reader(sock, self.receive.drain, "a receive socket")
        self.receive.drops.watch(sock)

    def _watch_replies(self, sock: socket.socket) -> None:
        if not self.options.replies:
            self.replies.refuse(sock)
            return
        self.replies.prepare(sock)
        self._add_reader(sock, self.replies.drain, "a transmit socket")
        self.receive.drops.watch(sock)

    def _add_reader(self, sock: socket.socket, drain: Drain, what: str) -> None:
        assert self.loop is not None
        reader = SocketReader(self.loop, sock, drain, self.options.coalesce_delay)
        try:
            reader.start()
        except OSError as exc:
            # epoll_ctl refuses past fs.epoll.max_user_watches (ENOSPC) or memory.
            raise MulticastError(f"cannot watch {what} for reading: {exc}") from exc
        self._socket_readers[sock] = reader

    def _unwatch(self, sock: socket.socket) -> None:
        reader = self._socket_readers.pop(sock, None)
        if reader is not None:
            reader.stop()
        self.receive.drops.forget(sock)
        self.replies.forget(sock)

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

    # -- groups at run time ----------------------------------------------------------

    def check_new_group(self, group: str) -> Group:
        """The group to add, checked like the constructor's groups; ValueError if not."""
        parsed = parse_group(group)
        if parsed.family != self.options.group.family:
            raise ValueError(
                f"group {parsed} is not of this endpoint's address family ({self.options.group} "
                "is); use another endpoint for the other family"
            )
        if parsed in self.memberships:
            raise ValueError(f"group {parsed} is already one of this endpoint's groups")
        if self.options.sources:
            validate_sources(parsed, self.options.sources)
        unusable = [i.name for i in self.links.interfaces if not is_eligible(i, parsed)]
        if unusable:
            # Every interface in use holds every group; this one cannot, on these.
            raise ValueError(
                f"group {parsed} cannot be carried on {', '.join(unusable)} (its scope needs "
                "an address those interfaces lack); use another endpoint for it"
            )
        return parsed

    def add_group(self, group: Group) -> None:
        """Join ``group`` on every interface in use, or raise MulticastError having joined none."""
        self.links.add_group(group)
        if self.options.keepalive is not None and self.options.join:
            keeper = self.keepalives[group] = self._keeper(group)
            if self.state == "open" and self.loop is not None:
                keeper.start(self.loop)

    def remove_group(self, group: Group) -> None:
        """Leave ``group`` everywhere; nothing of it is delivered from now on."""
        keeper = self.keepalives.pop(group, None)
        if keeper is not None:
            keeper.close()
        self.links.remove_group(group)
        # Already read but still queued for a reader: never handed out after the leave.
        self.readers.discard_group(str(group))

    def keepalive_states(self) -> tuple[KeepaliveState, ...]:
        if self.state != "open":
            return ()
        return tuple(
            dataclasses.replace(state, group=str(group))
            for group, keeper in self.keepalives.items()
            for state in keeper.states()
        )

    def _joined(self, group: Group) -> list[tuple[Interface, socket.socket]]:
        pairs = []
        for iface in self.links.interfaces:
            sock = self.memberships.socket_of(group, iface.index)
            if sock is not None:
                pairs.append((iface, sock))
        return pairs


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
