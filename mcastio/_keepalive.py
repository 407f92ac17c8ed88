"""The membership keeper at run time: watch queries and reports, refresh when due.

The decisions are :mod:`._keeper`'s; the sockets are :mod:`._rawnet`'s and
:func:`._net.refresh_by_source_filter`. Runs on the endpoint's event loop with
one timer and, where CAP_NET_RAW allows, one raw IGMP or ICMPv6 socket that both
hears the queries the host accepts and sends the reports. No task, so closing is
synchronous (``MulticastTransport.close`` needs that); no packet socket, whose
close waits for an RCU grace period (~12 ms).
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence

from . import _net, _rawnet
from ._discovery import proc_net_path
from ._errors import MulticastError, RawAccessError
from ._igmp import igmp_report, mld_report, parse_igmp_query, parse_mld_message
from ._keeper import (
    KeepaliveState,
    Mechanism,
    Track,
    beacon_name,
    choose_mechanism,
    due,
    heard_query,
    next_due,
    refreshed,
    state_of,
)
from ._model import Group, Interface
from ._procnet import parse_igmp

__all__ = ["JoinedSource", "Keepalive"]

_log = logging.getLogger("mcastio")

#: The interfaces joined now, each with the receive socket holding the membership.
JoinedSource = Callable[[], Sequence[tuple[Interface, socket.socket]]]

_serial = itertools.count()


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
        self._joined = joined
        self._clock = clock
        self._tracks: dict[str, Track] = {}
        self._mechanisms: dict[str, tuple[Mechanism, str]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._raw: socket.socket | None = None
        self._beacon: socket.socket | None = None

    @property
    def interval(self) -> float:
        return self._interval

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        try:
            self._raw = _rawnet.open_raw(self._group.family, hear_queries=True)
            self._watch_raw(loop, self._raw)
        except RawAccessError as exc:
            # Fine: the unprivileged refresh works on IGMPv3/MLDv2 hosts.
            _log.debug("keepalive for %s without raw reports: %s", self._group, exc)
        except MulticastError as exc:
            _log.warning("keepalive for %s without raw reports: %s", self._group, exc)
        try:
            self._beacon = _net_beacon(self._group)
        except MulticastError as exc:
            _log.debug("no keepalive beacon for doctor: %s", exc)
        self._sync(self._clock())
        self._schedule()

    def _watch_raw(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        try:
            loop.add_reader(sock.fileno(), self._on_queries)
        except OSError as exc:
            # epoll_ctl refuses past fs.epoll.max_user_watches (ENOSPC) or memory.
            self._raw = None
            sock.close()
            raise MulticastError(f"cannot watch the raw socket: {exc}") from exc

    def close(self) -> None:
        """Stop the timer and close the sockets. Idempotent."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._raw is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(self._raw.fileno())
            self._raw.close()
            self._raw = None
        if self._beacon is not None:
            self._beacon.close()
            self._beacon = None
        self._tracks.clear()
        # No timer is armed again after close (see _schedule).
        self._loop = None

    def states(self) -> tuple[KeepaliveState, ...]:
        now = self._clock()
        result = []
        for name, track in sorted(self._tracks.items(), key=lambda kv: kv[1].index):
            mechanism, reason = self._mechanisms.get(name) or self._mechanism_for(name)
            result.append(
                state_of(track, now, self._interval, mechanism, reason, self._raw is not None)
            )
        return tuple(result)

    # -- hearing queries -----------------------------------------------------------

    def _on_queries(self) -> None:
        assert self._raw is not None
        try:
            messages = _rawnet.read_queries(self._raw)
        except MulticastError as exc:
            _log.warning("keepalive for %s stops hearing queries: %s", self._group, exc)
            if self._loop is not None:
                self._loop.remove_reader(self._raw.fileno())
            return
        now = self._clock()
        by_index = {t.index: name for name, t in self._tracks.items()}
        for index, source, data in messages:
            name = by_index.get(index)
            if name is None:
                continue
            if self._v6:
                # The kernel ignores MLD from a source that is not link-local
                # (RFC 3810 §6.2) after raw sockets have seen it; so do we.
                if not ipaddress.IPv6Address(source).is_link_local:
                    continue
                query = parse_mld_message(name, ipaddress.IPv6Address(source), data)
            else:
                query = parse_igmp_query(name, data)
            if query is not None and (query.general or query.group == self._group.address):
                self._tracks[name] = heard_query(self._tracks[name], now, str(query.source))

    # -- refreshing ----------------------------------------------------------------

    def _sync(self, now: float) -> dict[str, tuple[Interface, socket.socket]]:
        current = {iface.name: (iface, sock) for iface, sock in self._joined()}
        for name in list(self._tracks):
            if name not in current or current[name][0].index != self._tracks[name].index:
                del self._tracks[name]
                self._mechanisms.pop(name, None)
        for name, (iface, _sock) in current.items():
            if name not in self._tracks:
                self._tracks[name] = Track(name, iface.index, joined=now)
        return current

    def _schedule(self) -> None:
        if self._loop is None:
            return
        when = next_due(self._tracks.values(), self._interval)
        now = self._clock()
        # With nothing joined yet, look again in one interval: a watcher may add one.
        delay = self._interval if when is None else max(0.0, when - now)
        self._timer = self._loop.call_later(delay, self._tick)

    def _tick(self) -> None:
        self._timer = None
        now = self._clock()
        try:
            current = self._sync(now)
            for name, track in list(self._tracks.items()):
                if due(track, now, self._interval):
                    iface, sock = current[name]
                    self._refresh(track, iface, sock, now)
        finally:
            # Whatever happened to one refresh, the keeper keeps its schedule.
            self._schedule()

    def _mechanism_for(self, name: str) -> tuple[Mechanism, str]:
        return choose_mechanism(self._raw is not None, _host_version(self._v6, name), self._v6)

    def _refresh(self, track: Track, iface: Interface, sock: socket.socket, now: float) -> None:
        mechanism, reason = self._mechanisms[track.interface] = self._mechanism_for(iface.name)
        try:
            if mechanism == "report":
                self._send_report(iface)
            elif mechanism == "source-filter":
                _net.refresh_by_source_filter(sock, self._group, iface, self._sources)
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
            _log.info(
                "keepalive: no answered query for %s on %s in %g s; refreshing the "
                "membership every %g s (%s)",
                self._group,
                iface.name,
                self._interval,
                self._interval,
                "raw report" if mechanism == "report" else "source-filter change",
            )
        self._tracks[track.interface] = refreshed(track, now, announce=True)

    def _send_report(self, iface: Interface) -> None:
        assert self._raw is not None
        version = _host_version(self._v6, iface.name)
        dest: ipaddress.IPv4Address | ipaddress.IPv6Address
        if self._v6:
            group6 = ipaddress.IPv6Address(self._group.address)
            payload, dest = mld_report(
                version, group6, [ipaddress.IPv6Address(s) for s in self._sources]
            )
            # MLD must come from the link-local address (RFC 3810 §5).
            source = next((str(a.ip) for a in iface.ipv6 if a.ip.is_link_local), "::")
        else:
            group4 = ipaddress.IPv4Address(self._group.address)
            payload, dest = igmp_report(
                version, group4, [ipaddress.IPv4Address(s) for s in self._sources]
            )
            source = str(iface.ipv4[0].ip)
        _rawnet.send_raw(self._raw, iface, source, payload, str(dest))


def _net_beacon(group: Group) -> socket.socket:
    return _rawnet.open_beacon(beacon_name("keepalive", str(group), os.getpid(), next(_serial)))


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def _host_version(v6: bool, ifname: str) -> int:
    """What the host speaks on ``ifname``: IGMP 1-3 (the kernel's own column) or MLD 1-2."""
    if v6:
        # The kernel does not show its MLD compatibility mode; the forced one is a sysctl.
        forced = {
            _read(f"/proc/sys/net/ipv6/conf/{name}/force_mld_version").strip()
            for name in ("all", ifname)
        }
        return 1 if "1" in forced else 2
    for device in parse_igmp(_read(proc_net_path("igmp"))):
        if device.interface == ifname and device.querier[1:].isdigit():
            return int(device.querier[1:])
    return 3
