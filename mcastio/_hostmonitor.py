"""One host monitor per event loop: one watcher for every endpoint in it.

Each endpoint used to run a watcher of its own: a netlink socket, a task, and a
re-read of the host on every change. A hundred endpoints in one program paid for
a hundred of each, and handled every netlink storm a hundred times. The monitor
owns the one :class:`._watcher.Watcher` (netlink, or polling where that is off),
and on each of its rounds reads each distinct snapshot source once and hands the
snapshot to every endpoint's reconcile in turn.

Endpoints share a monitor when they run on the same loop and ask for the same
watching (``netlink`` and ``poll_interval``). It starts with the first endpoint
and stops with the last. One endpoint's reconcile never stalls the others: a
kernel refusal (``MulticastError``) is logged and the round retried with back-off,
as before; a bug (an ``interfaces=`` predicate that raises) is reported through
the loop's exception handler and stops following interfaces for that endpoint
only. Its state is :class:`HostMonitorState` (``MulticastEndpoint.host_monitor``).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from ._errors import EndpointClosedError, MulticastError
from ._hostread import read_off_loop
from ._model import Interface
from ._watcher import Watcher

__all__ = ["HostMonitor", "HostMonitorState", "monitor_for"]

_log = logging.getLogger("mcastio")

Snapshot = Sequence[Interface]


class Follower(Protocol):
    """What the monitor needs of an endpoint (the engine)."""

    snapshot_source: Callable[[], Snapshot]

    def reconcile(
        self, reannounce: frozenset[int] = frozenset(), snapshot: Snapshot | None = None
    ) -> bool: ...


@dataclass(frozen=True, slots=True)
class HostMonitorState:
    """What the event loop's host monitor is doing, as seen by one endpoint."""

    #: Endpoints that share this monitor (this one included).
    endpoints: int
    #: ``"netlink"``, ``"poll"`` or ``"stopped"``.
    mode: str
    #: Netlink notifications read so far (0 when polling).
    notifications: int
    #: Rounds run: each re-read the host once and re-planned every endpoint once.
    rounds: int


_Key = tuple[bool, float]
_monitors: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[_Key, HostMonitor]] = (
    weakref.WeakKeyDictionary()
)


def monitor_for(
    loop: asyncio.AbstractEventLoop, netlink: bool, poll_interval: float
) -> HostMonitor:
    """The monitor for this loop and this kind of watching, made on first use."""
    per_loop = _monitors.setdefault(loop, {})
    key = (netlink, poll_interval)
    monitor = per_loop.get(key)
    if monitor is None:
        monitor = per_loop[key] = HostMonitor(loop, key)
    return monitor


def _cancel_requested() -> bool:
    """Whether the running task is being cancelled (Python 3.11+ can tell; 3.10 not)."""
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)
    return bool(cancelling()) if cancelling is not None else False


class HostMonitor:
    """A watcher shared by the endpoints of one event loop, reference-counted."""

    def __init__(self, loop: asyncio.AbstractEventLoop, key: _Key) -> None:
        self._loop = loop
        self._key = key
        netlink, poll_interval = key
        self.watcher = Watcher(self._round, netlink=netlink, poll_interval=poll_interval)
        # Insertion-ordered: endpoints are re-planned in the order they started.
        self._followers: dict[Follower, None] = {}
        # The last snapshot read from each source, and the watcher's counts then.
        self._cache: dict[Callable[[], Snapshot], tuple[Snapshot, int, int]] = {}
        # A reading under way on a thread: endpoints started together share it.
        self._pending: dict[Callable[[], Snapshot], asyncio.Task[Snapshot]] = {}

    def state(self) -> HostMonitorState:
        w = self.watcher
        return HostMonitorState(len(self._followers), w.mode, w.notifications, w.rounds)

    def attach(self, follower: Follower) -> None:
        """Count ``follower`` in; the first one subscribes (before its snapshot is read)."""
        self._followers[follower] = None
        self.watcher.open()

    def snapshot(self, source: Callable[[], Snapshot]) -> Snapshot:
        """``source()``, or the last reading of it if no change was notified since.

        Only while netlink tells of every change: the socket is read first, so a
        change the loop has not handled yet still forces a fresh read. G endpoints
        started together then read the host once, not G times.
        """
        w = self.watcher
        w.read_now()
        cached = self._cache.get(source)
        if w.subscribed and cached is not None and cached[1:] == (w.notifications, w.losses):
            return cached[0]
        return self._read(source)

    async def snapshot_at_start(self, source: Callable[[], Snapshot], off_loop: bool) -> Snapshot:
        """:meth:`snapshot` for a start: the netlink socket is read in pieces, and
        with ``off_loop`` a fresh reading runs on a thread, shared by every start
        that asks meanwhile (so the loop runs on, and the host is read once)."""
        if not off_loop:
            return self.snapshot(source)
        w = self.watcher
        cached = self._cache.get(source)
        if cached is not None:
            await w.catch_up(self._loop)
            cached = self._cache.get(source)
            if w.subscribed and cached is not None and cached[1:] == (w.notifications, w.losses):
                return cached[0]
        pending = self._pending.get(source)
        if pending is None:
            pending = self._pending[source] = self._loop.create_task(
                self._read_off_loop(source), name="mcastio-read-host"
            )
            # Retrieved even when every start that waited on it was cancelled.
            pending.add_done_callback(lambda t: t.cancelled() or t.exception())
        try:
            return await asyncio.shield(pending)
        except asyncio.CancelledError:
            if pending.cancelled() and not _cancel_requested():
                # Not this task's cancellation: detach() stopped the reading when the
                # last endpoint waiting for it (this one) was closed. Its start says
                # so, as every start closed under way does; the reading has ended.
                raise EndpointClosedError("the endpoint was closed while it started") from None
            raise

    async def _read_off_loop(self, source: Callable[[], Snapshot]) -> Snapshot:
        w = self.watcher
        counts = (w.notifications, w.losses)
        try:
            snapshot = await read_off_loop(self._loop, source)
        finally:
            self._pending.pop(source, None)
        self._cache[source] = (snapshot, *counts)
        return snapshot

    def _read(self, source: Callable[[], Snapshot]) -> Snapshot:
        w = self.watcher
        counts = (w.notifications, w.losses)
        snapshot = source()
        self._cache[source] = (snapshot, *counts)
        return snapshot

    def started(self, follower: Follower, snapshot: Snapshot, rounds_before: int) -> None:
        """``follower`` has joined from ``snapshot``; from now on it is re-planned."""
        self.watcher.seed(snapshot)
        self.watcher.start(self._loop)
        if self.watcher.rounds != rounds_before:
            # A round ran while it started, and could not re-plan it yet.
            self.watcher.trigger()

    def detach(self, follower: Follower) -> bool:
        """Count ``follower`` out; True when it was the last, and the watching stops."""
        self._followers.pop(follower, None)
        if self._followers:
            return False
        self.watcher.cancel()
        # Nobody waits for a reading under way any more (stop() waits for its end).
        for pending in self._pending.values():
            pending.cancel()
        self._cache.clear()
        per_loop = _monitors.get(self._loop)
        if per_loop is not None and per_loop.get(self._key) is self:
            del per_loop[self._key]
        return True

    async def stop(self) -> None:
        """Wait for the watcher task and any reading that :meth:`detach` stopped."""
        await self.watcher.stop()
        pending = set(self._pending.values())
        if pending:
            await asyncio.wait(pending)

    def _round(self, reannounce: frozenset[int]) -> bool:
        """Read each snapshot source once; re-plan every endpoint from it."""
        snapshots: dict[Callable[[], Snapshot], Snapshot | None] = {}
        ok = True
        for follower in list(self._followers):
            source = follower.snapshot_source
            if source not in snapshots:
                try:
                    snapshots[source] = self._read(source)
                except (MulticastError, OSError) as exc:
                    _log.warning("cannot read the interfaces, will retry: %s", exc)
                    snapshots[source] = None
            snapshot = snapshots[source]
            if snapshot is None:
                ok = False
                continue
            try:
                ok = follower.reconcile(reannounce, snapshot) and ok
            except (MulticastError, OSError) as exc:
                # A kernel refusal (out of descriptors, memory) is transient: retry.
                _log.warning("could not follow the interfaces, will retry: %s", exc)
                ok = False
            except Exception as exc:  # noqa: BLE001 - a bug in one endpoint only
                self._followers.pop(follower, None)
                stop = getattr(follower, "watch_failed", None)
                if callable(stop):
                    stop()
                self._loop.call_exception_handler(
                    {
                        "message": "mcastio interface watcher stopped; interfaces are no "
                        "longer followed for this endpoint",
                        "exception": exc,
                    }
                )
        return ok
