"""One interface's membership refreshes, shared by every keeper on an event loop.

Each endpoint's keeper (:mod:`._keepalive`) used to send its own report for its
own group on each interface, on its own timer: 100 groups on 16 links made 1,600
reports and 100 timers per interval. Here the keepers of one loop that hold
groups on one interface share a :class:`LinkReporter` per (interface, family): one
timer, and at each refresh one IGMPv3/MLDv2 report with a record per group (split
by the link's MTU, :mod:`._reportplan`), sent on the loop's shared raw socket
(:mod:`._querywatch`). The keepers keep their own per-group view (Track, state);
the reporter asks them when they fall due and tells them when it reported.

Needs CAP_NET_RAW: without it each keeper refreshes its own group by changing its
source filter, which only the group's own socket can do.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import socket
import time
from collections.abc import Callable
from typing import Protocol

from . import _querywatch
from ._errors import MulticastError
from ._hostreport import host_version, report_source
from ._model import Interface
from ._perloop import PerLoop
from ._platform.linux import rawnet as _rawnet
from ._refreshpace import RefreshPace, pace_for
from ._reportplan import Record, Report, gather, merge, plan

__all__ = ["LinkReporter", "Member", "reporter_for", "reporters"]

_log = logging.getLogger("mcastio")

# Where the kernel will not tell the MTU: the least each family must carry.
_LEAST_MTU = {socket.AF_INET: 576, socket.AF_INET6: 1280}


class Member(Protocol):
    """One endpoint's keeper of one group, as a reporter sees it."""

    @property
    def record(self) -> Record: ...

    @property
    def window(self) -> float:
        """How early a refresh may come: a refresh due anyway takes this one along."""
        ...

    def due_in(self, index: int) -> float | None:
        """Seconds until the group must be reported on interface ``index`` (<= 0: now)."""
        ...

    def resync(self) -> None:
        """Look again at where the group is joined (it may leave this reporter)."""
        ...

    def reported(self, index: int, error: str) -> None:
        """A refresh on ``index`` carried the group (``error``: it may not have left)."""
        ...


class LinkReporter:
    """Every keeper's refreshes on one interface and family of one loop: one timer."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, family: socket.AddressFamily, iface: Interface
    ) -> None:
        # Its own hold on the loop's raw socket, released with the last member.
        self._watch = _querywatch.acquire(loop, family)
        self._loop = loop
        self._v6 = family == socket.AF_INET6
        self.iface = iface
        #: In the order they came: the same groups always make the same reports.
        self.members: dict[Member, None] = {}
        self._timer: asyncio.TimerHandle | None = None
        #: How early (a fraction of a member's window, up to a tenth of its interval)
        #: this interface refreshes: the interfaces of one host spread their
        #: refreshes, each a slice of bookkeeping per member, over the interval.
        self._lead = random.uniform(0.0, 0.2)
        #: A refresh spread over passes: the members still to look again, then
        #: those still to tell that it carried them (with the send's error).
        self._unsynced: list[Member] | None = None
        self._unreported: tuple[list[Member], str] | None = None
        self._merged: tuple[list[Member], tuple[Record, ...]] = ([], ())
        #: Reports sent, and refreshes (timer passes that sent), for tests and doctor.
        self.reports = 0
        self.refreshes = 0

    @property
    def timer(self) -> asyncio.TimerHandle | None:
        return self._timer

    def add(self, member: Member, iface: Interface) -> None:
        """``member`` holds its group on this interface (again: the newest view wins)."""
        self.iface = iface
        if member not in self.members:
            self.members[member] = None
            self._schedule_for(member)

    def remove(self, member: Member) -> None:
        """``member`` left; the last one closes the reporter. Idempotent."""
        if member in self.members:
            del self.members[member]
            self._merged = ([], ())  # held no longer than its member
            if not self.members:
                self.close()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        table = reporters(self._loop)
        key = (self._watch.family, self.iface.index)
        if table.get(key) is self:
            del table[key]
            _querywatch.release(self._watch)

    def _schedule(self) -> None:
        if self.busy:
            return  # a refresh under way (deferred to a later pass) schedules when done
        if self._timer is not None:
            self._timer.cancel()
        index, lead = self.iface.index, self._lead
        waits = [w - lead * m.window for m in self.members if (w := m.due_in(index)) is not None]
        self._timer = self._loop.call_later(max(0.0, min(waits)), self._tick) if waits else None

    def _schedule_for(self, member: Member) -> None:
        """Bring the timer forward for a new member, if it is due first.

        Not :meth:`_schedule`: that looks at every member, and 100 keepers starting
        on 8 links made 40,400 looks (0.2 s) where 800 do.
        """
        if self.busy:
            return
        wait = member.due_in(self.iface.index)
        if wait is None:
            return
        at = self._loop.time() + max(0.0, wait - self._lead * member.window)
        if self._timer is not None:
            if self._timer.when() <= at:
                return
            self._timer.cancel()
        self._timer = self._loop.call_at(at, self._tick)

    def _tick(self) -> None:
        if self._timer is not None:
            # Run early (a deferred pass) while a member's add armed the timer again.
            self._timer.cancel()
            self._timer = None
        pace = pace_for(self._loop)
        if not pace.allows():
            pace.defer(self._tick)
            return
        began = time.perf_counter()
        try:
            # 100 keepers on 16 links make milliseconds of looking again and of
            # bookkeeping per interval: both go in slices of the loop's pace.
            if self._unreported is None:
                if self._unsynced is None:
                    self._unsynced = list(self.members)
                if not self._each(self._unsynced, lambda m: m.resync(), pace, began):
                    return
                began = time.perf_counter()
                self._unsynced = None
                self._refresh()
            if self._unreported is not None:
                chosen, error = self._unreported
                index = self.iface.index
                if not self._each(chosen, lambda m: m.reported(index, error), pace, began):
                    return
                began = time.perf_counter()
                self._unreported = None
        finally:
            pace.charge(began)
            if self.members and not self.busy and self._timer is None:
                self._schedule()

    @property
    def busy(self) -> bool:
        """Whether a refresh is under way, spread over passes of the loop."""
        return self._unsynced is not None or self._unreported is not None

    def _each(
        self, todo: list[Member], step: Callable[[Member], None], pace: RefreshPace, began: float
    ) -> bool:
        """``step`` each member still here; False if the rest waits for a later pass."""
        while todo:
            member = todo.pop()
            if member in self.members:
                step(member)
            pace.charge(began)
            began = time.perf_counter()
            if todo and not pace.allows():
                pace.defer(self._tick)
                return False
        return True

    def _refresh(self) -> None:
        """Send the reports of every member due, or soon due, here."""
        members = tuple(self.members)
        index = self.iface.index
        waits = [(m.due_in(index), m.window) for m in members]
        chosen = [members[i] for i in gather(waits, self._lead)]
        if chosen:
            if chosen != self._merged[0]:
                # The same members every interval: merged once, not per refresh.
                self._merged = (chosen, merge(m.record for m in chosen))
            self._unreported = (list(chosen), self._send(self._merged[1]))

    def _send(self, records: tuple[Record, ...]) -> str:
        """Send the reports for ``records``; the error, if one did not leave."""
        iface = self.iface
        try:
            version = host_version(self._v6, iface.name)
            mtu = _rawnet.link_mtu(self._watch.sock, iface.name)
            reports = _planned(records, self._v6, version, mtu or _LEAST_MTU[self._watch.family])
            source = report_source(iface, self._v6)
            for report in reports:
                _rawnet.send_raw(self._watch.sock, iface, source, report.payload, str(report.dest))
                self.reports += 1
        except (MulticastError, ValueError) as exc:
            _log.warning("keepalive on %s: %s", iface.name, exc)
            return str(exc)
        finally:
            self.refreshes += 1
        return ""


@functools.lru_cache(maxsize=256)
def _planned(records: tuple[Record, ...], v6: bool, version: int, mtu: int) -> tuple[Report, ...]:
    # The same groups every interval: built once, not once per refresh.
    return plan(records, v6=v6, version=version, mtu=mtu)


#: Per loop: the reporters by (family, interface index). A reporter holds its loop
#: (as the raw socket's watch does) only while a keeper uses it: the last keeper's
#: close, with its endpoint's, removes it from the table.
reporters: PerLoop[dict[tuple[int, int], LinkReporter]] = PerLoop(lambda _loop: {})


def reporter_for(
    loop: asyncio.AbstractEventLoop, family: socket.AddressFamily, iface: Interface
) -> LinkReporter:
    """The loop's reporter for ``iface`` and ``family``, made on first use.

    Raises :class:`RawAccessError` without CAP_NET_RAW.
    """
    table = reporters(loop)
    reporter = table.get((family, iface.index))
    if reporter is None:
        reporter = table[(family, iface.index)] = LinkReporter(loop, family, iface)
    return reporter
