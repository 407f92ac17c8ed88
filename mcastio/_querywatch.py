"""One raw IGMP or ICMPv6 socket per event loop and family, shared by every keeper on it.

Each membership keeper used to open its own raw socket, so a flood of queries was
read and parsed once per endpoint: about 1,600 queries/s against 40 endpoints took
a whole core. Here every keeper on a loop shares one socket per family, each query
is judged once (:func:`._igmp.check_igmp`, :func:`._igmp.check_mld`), and per
interface at most :data:`RATE` queries a second are judged at all: the rest are
read, counted and dropped unparsed. Dropping fails safe: a keeper that misses a
real querier's query refreshes the membership itself, which is harmless.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

from ._errors import MulticastError
from ._igmp import QueryCheck, QuerySeen, check_igmp, check_mld, has_router_alert
from ._platform.linux import rawnet as _rawnet

__all__ = ["RATE", "QueryWatch", "acquire", "judge", "release"]

_log = logging.getLogger("mcastio")

#: Queries judged per second and interface; a querier sends one general query per
#: interval and two group-specific ones per Leave, far below it.
RATE = 50.0
_BURST = 50.0

#: Called with the arrival ifindex and the accepted query.
Listener = Callable[[int, QuerySeen], None]


def judge(v6: bool, raw: _rawnet.RawQuery) -> QueryCheck:
    """Judge one query as read by :func:`._rawnet.read_queries` (pure)."""
    index, source, data, hop_limit, hopopts = raw
    name = str(index)
    if not v6:
        return check_igmp(name, data)
    return check_mld(
        name,
        ipaddress.IPv6Address(source),
        data,
        hop_limit=hop_limit,
        router_alert=has_router_alert(hopopts),
    )


@dataclass(slots=True)
class _Counts:
    """Per interface: what was judged, and why the last discard was."""

    accepted: int = 0
    discarded: int = 0
    rate_limited: int = 0
    last_reason: str = ""
    tokens: float = _BURST
    refilled: float = 0.0


@dataclass(slots=True)
class QueryWatch:
    """The shared socket, its listeners and its counters."""

    loop: asyncio.AbstractEventLoop
    family: socket.AddressFamily
    sock: socket.socket
    users: int = 0
    listeners: list[Listener] = field(default_factory=list)
    counts: dict[int, _Counts] = field(default_factory=dict)

    def counts_for(self, index: int) -> _Counts:
        counts = self.counts.get(index)
        if counts is None:
            counts = self.counts[index] = _Counts(refilled=self.loop.time())
        return counts

    def on_readable(self) -> None:
        try:
            queries = _rawnet.read_queries(self.sock)
        except MulticastError as exc:
            _log.warning("the keepers stop hearing queries: %s", exc)
            self.loop.remove_reader(self.sock.fileno())
            return
        now = self.loop.time()
        v6 = self.family == socket.AF_INET6
        for raw in queries:
            counts = self.counts_for(raw[0])
            counts.tokens = min(_BURST, counts.tokens + (now - counts.refilled) * RATE)
            counts.refilled = now
            if counts.tokens < 1.0:
                counts.rate_limited += 1
                continue
            counts.tokens -= 1.0
            query, why = judge(v6, raw)
            if query is None:
                if why:
                    counts.discarded += 1
                    counts.last_reason = why
                continue
            counts.accepted += 1
            for listener in tuple(self.listeners):
                listener(raw[0], query)


_watches: dict[tuple[asyncio.AbstractEventLoop, int], QueryWatch] = {}


def acquire(loop: asyncio.AbstractEventLoop, family: socket.AddressFamily) -> QueryWatch:
    """The loop's watch for ``family``, opened on first use; pair with :func:`release`.

    Raises :class:`RawAccessError` without CAP_NET_RAW.
    """
    watch = _watches.get((loop, family))
    if watch is None:
        sock = _rawnet.open_raw(family, hear_queries=True)
        watch = QueryWatch(loop, family, sock)
        try:
            loop.add_reader(sock.fileno(), watch.on_readable)
        except OSError as exc:
            # epoll_ctl refuses past fs.epoll.max_user_watches (ENOSPC) or memory.
            sock.close()
            raise MulticastError(f"cannot watch the raw socket: {exc}") from exc
        _watches[(loop, family)] = watch
    watch.users += 1
    return watch


def release(watch: QueryWatch, listener: Listener | None = None) -> None:
    """One user fewer; the last one closes the socket. Idempotent per listener."""
    if listener is not None and listener in watch.listeners:
        watch.listeners.remove(listener)
    watch.users -= 1
    if watch.users > 0:
        return
    _watches.pop((watch.loop, watch.family), None)
    if not watch.loop.is_closed():
        watch.loop.remove_reader(watch.sock.fileno())
    watch.sock.close()
