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
import socket
from collections.abc import Sequence

from ._discovery import read_snapshot
from ._errors import MulticastError
from ._keepalive import Keepalive
from ._keeper import KeepaliveState
from ._links import Links
from ._membership import Memberships
from ._model import (
    Group,
    Interface,
    InterfaceSelector,
    ineligibility,
    plan_changes,
    select_interfaces,
)
from ._options import EndpointOptions, SnapshotSource
from ._pacing import Drain, SocketReader
from ._readers import Readers
from ._receive import ReceivePath
from ._replies import Replies
from ._transmit import TransmitPool
from ._watch import InterfaceEvent, desired_interfaces
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
        )
        self.memberships = Memberships(
            group,
            opts.port,
            opts.sources,
            opts.receive_buffer,
            receive_ttl=opts.receive_ttl,
            on_open=self._watch_receiver,
            on_close=self._unwatch,
        )
        self.links = Links(group, self.memberships, self.tx, self.receive)
        self.keepalive: Keepalive | None = None
        if opts.keepalive is not None:
            self.keepalive = Keepalive(group, opts.sources, opts.keepalive, self._joined)
        self.watcher: Watcher | None = None
        if opts.watch:
            self.watcher = Watcher(
                self.reconcile, netlink=opts.netlink, poll_interval=opts.poll_interval
            )
        # A watching endpoint may start with no usable interface; an owner that
        # must know at start (DualStackEndpoint: run without that family) sets this.
        self.require_interface_at_start = False

    # -- opening and closing -------------------------------------------------------

    def open(self, loop: asyncio.AbstractEventLoop) -> None:
        """Join on every selected interface and start following changes."""
        self.loop = loop
        group = self.options.group
        watcher = self.watcher
        try:
            if watcher is not None:
                # Subscribe before reading, so a change right after the read is not missed.
                watcher.open()
            try:
                snapshot = self.snapshot_source()
            except OSError as exc:
                raise MulticastError(f"cannot read the interfaces: {exc}") from exc
            desired = select_interfaces(snapshot, group, self.options.selector)
        except BaseException:
            if watcher is not None:
                watcher.cancel()
            raise
        if not desired:
            why = _explain_no_interfaces(snapshot, group, self.options.selector)
            if watcher is None or self.require_interface_at_start:
                if watcher is not None:
                    watcher.cancel()
                raise MulticastError(why)
            _log.warning("%s\nwaiting for an interface to become usable", why)
        self.state = "open"
        self.tx.bind(loop)
        try:
            failures = self._join_at_start(desired)
            if watcher is not None:
                watcher.seed(snapshot)
                watcher.start(loop)
                if failures:
                    watcher.trigger()
            if self.keepalive is not None:
                self.keepalive.start(loop)
        except BaseException:
            self.close()
            raise

    def _join_at_start(self, desired: Sequence[Interface]) -> list[MulticastError]:
        failures = self.links.apply(plan_changes({}, desired, self.options.group.family))
        first = failures[0] if failures else None
        # Joins refused on every usable interface are a setup error (too many
        # sources, a port in use, no descriptors left): fail at once, saying why.
        if desired and not self.links:
            raise MulticastError(
                f"could not join {self.options.group} on any interface: {first}"
            ) from first
        if failures and self.watcher is None:
            # Nothing would ever retry them, so the endpoint would stay partial unseen.
            raise MulticastError(
                f"could not use {len(failures)} of {len(desired)} interfaces for "
                f"{self.options.group} (watch=False: nothing would retry them):\n"
                + "\n".join(f"  {exc}" for exc in failures)
            ) from first
        return failures

    def close(self) -> None:
        """Release every socket and end every reader at once (the watcher task ends later)."""
        self.state = "closed"
        if self.watcher is not None:
            self.watcher.cancel()
        if self.keepalive is not None:
            self.keepalive.close()
        self.readers.close()
        self.links.close()

    # -- the sockets' readers ------------------------------------------------------

    def _watch_receiver(self, sock: socket.socket) -> None:
        self._add_reader(sock, self.receive.drain, "a receive socket")
        self.receive.drops.watch(sock)

    def _watch_replies(self, sock: socket.socket) -> None:
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

    # -- following changes ---------------------------------------------------------

    def reconcile(self, reannounce: frozenset[int] = frozenset()) -> bool:
        """Bring the memberships in line with a fresh snapshot; False if something failed."""
        if self.state != "open":
            return True
        try:
            snapshot = self.snapshot_source()
        except OSError as exc:
            _log.warning("cannot read the interfaces, will retry: %s", exc)
            return False
        opts = self.options
        desired = desired_interfaces(snapshot, opts.group, opts.selector)
        failures, events = self.links.reconcile(desired, reannounce)
        self.emit(events)
        return not failures

    def emit(self, events: Sequence[InterfaceEvent]) -> None:
        self.readers.emit(str(self.options.group), events, self.loop)

    def keepalive_states(self) -> tuple[KeepaliveState, ...]:
        if self.keepalive is None or self.state != "open":
            return ()
        return self.keepalive.states()

    def _joined(self) -> list[tuple[Interface, socket.socket]]:
        pairs = []
        for iface in self.links.interfaces:
            sock = self.memberships.socket_of(iface.index)
            if sock is not None:
                pairs.append((iface, sock))
        return pairs


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
