"""The membership keeper at run time: watch queries and reports, refresh when due.

The decisions are :mod:`._keeper`'s; the sockets are :mod:`._platform.linux.rawnet`'s and
:func:`._platform.linux.receiver.refresh_by_source_filter`. One keeper per endpoint and group keeps
that group's view (a Track per interface, its state). Where CAP_NET_RAW allows,
the loop's one raw IGMP or ICMPv6 socket hears the queries the host accepts, and
the refreshes are a :class:`._linkreports.LinkReporter`'s, one per interface for
every keeper of the loop: one timer and one report per refresh for all the groups
there. Without it, each keeper changes its group's source filter on its own
timer. No task, so closing is synchronous (``MulticastTransport.close`` needs
that); no packet socket, whose close waits for an RCU grace period (~12 ms).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import socket
import time
from collections.abc import Callable, Sequence

from . import _linkreports, _querywatch
from ._beacons import Beacon, keepalive_beacon
from ._errors import MulticastError, RawAccessError
from ._hostreport import SHARED, holders, host_version, stop_reading
from ._igmp import QuerySeen
from ._keeper import (
    Heard,
    KeepaliveState,
    Mechanism,
    Track,
    choose_mechanism,
    due,
    heard_query,
    next_due,
    refreshed,
    state_of,
)
from ._model import Group, Interface
from ._platform.linux import receiver as _linuxnet
from ._refreshpace import pace_for
from ._reportplan import Record

__all__ = ["JoinedSource", "Keepalive"]

_log = logging.getLogger("mcastio")

#: The interfaces joined now, each with the receive socket holding the membership.
JoinedSource = Callable[[], Sequence[tuple[Interface, socket.socket]]]


# Interfaces a keeper links to their reporters per loop pass (about 1 ms).
_LINKS_PER_PASS = 128


class Keepalive:
    """Keeps one endpoint's memberships alive on switches that hear no query from this host."""

    def __init__(
        self,
        group: Group,
        sources: Sequence[str],
        interval: float,
        joined: JoinedSource,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._group = group
        self._v6 = group.family == socket.AF_INET6
        self._sources = tuple(sources)
        self._interval = interval
        self._phase = _phase(interval)
        self._joined = joined
        self._clock = clock
        self._tracks: dict[str, Track] = {}
        self._mechanisms: dict[str, tuple[Mechanism, str]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._watch: _querywatch.QueryWatch | None = None
        #: Per interface: why the last refresh may not have reached the wire.
        self._unsure: dict[str, str] = {}
        self._beacon: Beacon | None = None
        #: With raw reports: the reporter of each interface held, by index.
        self._links: dict[int, tuple[str, _linkreports.LinkReporter, Interface]] = {}
        self._synced = -float("inf")
        self.record: Record = (group.address, tuple(map(ipaddress.ip_address, self._sources)))

    @property
    def interval(self) -> float:
        return self._interval

    @property
    def window(self) -> float:
        # Keepers started together are phased over half an interval (see _phase):
        # one refresh takes them all, and from then on they fall due together.
        return 0.5 * self._interval

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        try:
            # One raw socket per loop and family, shared by every keeper: a query
            # flood is read and judged once, not once per endpoint.
            self._watch = _querywatch.acquire(loop, self._group.family)
            self._watch.listeners.append(self._on_query)
        except RawAccessError as exc:
            # Fine: the unprivileged refresh works on IGMPv3/MLDv2 hosts.
            _log.debug("keepalive for %s without raw reports: %s", self._group, exc)
        except MulticastError as exc:
            _log.warning("keepalive for %s without raw reports: %s", self._group, exc)
        # Doctor's sign that this group is kept: one beacon per loop names them all.
        self._beacon = keepalive_beacon(loop)
        self._beacon.add(str(self._group))
        # Linked to the interfaces' reporters when first due (its own timer until
        # then), half an interval away at the earliest: at a start on 1,024 links,
        # linking was a third of a keeper's cost, and it held up the other starts.
        self._sync(self._clock(), link=False)
        self._schedule()

    def close(self) -> None:
        """Stop the timer and close the sockets. Idempotent."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for _name, reporter, _iface in self._links.values():
            reporter.remove(self)
        self._links.clear()
        if self._watch is not None:
            _querywatch.release(self._watch, self._on_query)
            self._watch = None
        if self._beacon is not None:
            self._beacon.remove(str(self._group))
            self._beacon = None
        self._tracks.clear()
        # A background read of /proc/net/igmp must not outlive the loop: the next
        # refresh of any keeper still open starts another.
        stop_reading()
        # No timer is armed again after close (see _schedule).
        self._loop = None

    def states(self) -> tuple[KeepaliveState, ...]:
        now = self._clock()
        result = []
        for name, track in sorted(self._tracks.items(), key=lambda kv: kv[1].index):
            mechanism, reason = self._mechanisms.get(name) or self._mechanism_for(name)
            heard = Heard()
            if self._watch is not None and track.index in self._watch.counts:
                c = self._watch.counts[track.index]
                heard = Heard(c.discarded, c.rate_limited, c.last_reason)
            state = state_of(
                track,
                now,
                self._interval,
                mechanism,
                reason or self._unsure.get(name, ""),
                self._watch is not None,
                heard,
            )
            result.append(state)
        return tuple(result)

    # -- hearing queries -----------------------------------------------------------

    def _on_query(self, index: int, query: QuerySeen) -> None:
        """A query the shared socket judged valid arrived on interface ``index``."""
        if not (query.general or query.group == self._group.address):
            return
        for name, track in self._tracks.items():
            if track.index == index:
                self._tracks[name] = heard_query(track, self._clock(), str(query.source))
                return

    # -- refreshing ----------------------------------------------------------------

    def _sync(self, now: float, *, link: bool = True) -> dict[str, tuple[Interface, socket.socket]]:
        self._synced = now
        current = {iface.name: (iface, sock) for iface, sock in self._joined()}
        for name in list(self._tracks):
            if name not in current or current[name][0].index != self._tracks[name].index:
                index = self._tracks.pop(name).index
                self._mechanisms.pop(name, None)
                self._unsure.pop(name, None)
                if index in self._links:
                    self._links.pop(index)[1].remove(self)
        unlinked: list[tuple[str, Interface]] = []
        for name, (iface, _sock) in current.items():
            if name not in self._tracks:
                self._tracks[name] = Track(name, iface.index, joined=now - self._phase)
            if link and self._watch is not None and self._loop is not None:
                unlinked.append((name, iface))
        self._link_some(unlinked)
        return current

    def _link_some(self, todo: list[tuple[str, Interface]]) -> None:
        """Link ``todo`` in slices of _LINKS_PER_PASS, one per loop pass.

        A keeper's first refresh is due half an interval away at the earliest, so
        its reporters can wait a few passes: 1,024 links in one go held the loop
        about 10 ms per keeper, at every start.
        """
        for name, iface in todo[:_LINKS_PER_PASS]:
            track = self._tracks.get(name)
            # Closed, or the interface went or changed since: a later sync links it.
            if self._loop is not None and track is not None and track.index == iface.index:
                self._link(name, iface)
        rest = todo[_LINKS_PER_PASS:]
        if rest and self._loop is not None:
            self._loop.call_soon(self._link_some, rest)

    # -- refreshing with the interfaces' reporters (raw reports) ------------------

    def _link(self, name: str, iface: Interface) -> None:
        """The interface's reporter refreshes the group there (and hears of a new address)."""
        assert self._loop is not None
        held = self._links.get(iface.index)
        if held is not None and held[2] is iface:
            return  # nothing new: 16 links x 100 keepers look again every interval
        reporter = _linkreports.reporter_for(self._loop, self._group.family, iface)
        self._links[iface.index] = (name, reporter, iface)
        reporter.add(self, iface)

    def due_in(self, index: int) -> float | None:
        entry = self._links.get(index)
        track = self._tracks.get(entry[0]) if entry is not None else None
        if track is None:
            return None
        when = next_due((track,), self._interval)
        return None if when is None else when - self._clock()

    def resync(self) -> None:
        """Look again at the joined interfaces, at most four times an interval.

        Every reporter the keeper uses asks before it refreshes: sixteen links
        must not make sixteen looks per interval.
        """
        now = self._clock()
        if self._loop is not None and now - self._synced >= 0.25 * self._interval:
            self._sync(now)
            if not self._links:
                self._schedule()  # nothing joined: look again later on its own

    def reported(self, index: int, error: str) -> None:
        entry = self._links.get(index)
        track = self._tracks.get(entry[0]) if entry is not None else None
        if track is None:
            return
        now = self._clock()
        self._mechanisms[track.interface] = ("report", "")
        if error:
            self._tracks[track.interface] = refreshed(track, now, counted=False)
            return
        if not track.announced:
            self._announce(track.interface, "raw report")
        self._tracks[track.interface] = refreshed(track, now, announce=True)

    def _announce(self, name: str, how: str) -> None:
        _log.info(
            "keepalive: no answered query for %s on %s in %g s; refreshing the "
            "membership every %g s (%s)",
            self._group,
            name,
            self._interval,
            self._interval,
            how,
        )

    # -- refreshing on its own (no raw socket: the source filter) -----------------

    def _schedule(self) -> None:
        if self._loop is None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._links:
            return  # the reporters' timers serve it
        when = next_due(self._tracks.values(), self._interval)
        now = self._clock()
        # With nothing joined yet, look again in one interval: a watcher may add one.
        delay = self._interval if when is None else max(0.0, when - now)
        self._timer = self._loop.call_later(delay, self._tick)

    def _tick(self) -> None:
        self._timer = None
        if self._loop is None:
            return  # closed while waiting for its pass
        pace = pace_for(self._loop)
        if not pace.allows():
            pace.defer(self._tick)
            return
        began = time.perf_counter()
        deferred = False
        now = self._clock()
        try:
            current = self._sync(now)
            for name, track in list(self._tracks.items()):
                # With a raw socket every track is a reporter's to refresh.
                if self._watch is None and due(track, now, self._interval):
                    pace.charge(began)
                    began = time.perf_counter()
                    if not pace.allows():
                        # The rest in a later pass (see _refreshpace).
                        deferred = True
                        pace.defer(self._tick)
                        break
                    iface, sock = current[name]
                    self._refresh(track, iface, sock, now)
        finally:
            pace.charge(began)
            # Whatever happened to one refresh, the keeper keeps its schedule.
            if not deferred:
                self._schedule()

    def _mechanism_for(self, name: str) -> tuple[Mechanism, str]:
        return choose_mechanism(self._watch is not None, host_version(self._v6, name), self._v6)

    def _refresh(self, track: Track, iface: Interface, sock: socket.socket, now: float) -> None:
        mechanism, reason = self._mechanisms[track.interface] = self._mechanism_for(iface.name)
        try:
            if mechanism == "source-filter":
                _linuxnet.refresh_by_source_filter(sock, self._group, iface, self._sources)
                shared = holders(self._v6, iface.name, self._group) > 1
                self._unsure[iface.name] = SHARED.format(self._group, iface.name) if shared else ""
                if shared:
                    # Done anyway (it works when the others hold the group
                    # source-specific), but not counted: it may never reach the wire.
                    self._tracks[track.interface] = refreshed(track, now, counted=False)
                    return
        except MulticastError as exc:
            _log.warning("keepalive for %s on %s: %s", self._group, iface.name, exc)
            self._tracks[track.interface] = refreshed(track, now, counted=False)
            return
        if mechanism == "none":
            if not track.announced:
                _log.info("cannot keep %s alive on %s: %s", self._group, iface.name, reason)
            self._tracks[track.interface] = refreshed(track, now, counted=False, announce=True)
            return
        if not track.announced:
            self._announce(iface.name, "source-filter change")
        self._tracks[track.interface] = refreshed(track, now, announce=True)


def _phase(interval: float) -> float:
    """How much earlier than one interval after the join a keeper's first refresh comes.

    Up to half an interval, one phase per keeper: keepers started together (100
    groups at boot) then spread their reports over the loop's iterations instead of
    sending them all in one. Later refreshes follow their own last report, so they
    stay spread. (A phase per interface costs more: 16 timer callbacks per keeper.)
    """
    return random.uniform(0.0, 0.5 * interval)
