"""``Querier``: a backup IGMP/MLD querier for a segment that has none.

Sends general queries from each interface's own address (IPv4: its address in
the subnet, never 0.0.0.0, so no host's rp_filter drops them; IPv6: its
link-local address, which MLD requires), and follows the standard election:
it stands down while it hears a querier with a lower address and resumes after
the other-querier-present interval. The decisions are :mod:`._election`'s.
Needs root or CAP_NET_RAW.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import logging
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

from ._discovery import read_snapshot
from ._election import Election, Timing, heard, tick, validate_interval, wake_at
from ._errors import MulticastError, RawAccessError
from ._igmp import check_query, igmp_query, mld_query
from ._keeper import beacon_name
from ._model import Interface, InterfaceSelector, parse_group, select_interfaces
from ._platform import capabilities, unavailable

__all__ = ["Querier", "QuerierState"]

_log = logging.getLogger("mcastio")
_serial = itertools.count()
_ALL_HOSTS = {socket.AF_INET: "224.0.0.1", socket.AF_INET6: "ff02::1"}
# Probe groups for choosing interfaces: any IPv4 address, or an IPv6 link-local one.
_PROBES = {socket.AF_INET: parse_group("224.0.0.1"), socket.AF_INET6: parse_group("ff02::1")}


@dataclass(frozen=True, slots=True)
class QuerierState:
    """The querier on one interface and protocol."""

    interface: str
    #: ``"IGMPv3"``, ``"IGMPv2"``, ``"MLDv2"`` or ``"MLDv1"``.
    protocol: str
    #: The source address of our queries.
    address: str
    role: Literal["querier", "non-querier"]
    #: The lower-addressed querier we stand down for, while we do.
    other_querier: str | None
    queries_sent: int
    #: Queries heard here that a host discards (bad checksum, TTL or hop limit not
    #: 1, MLD without Router Alert or from a source that is not link-local, ...):
    #: they never make the querier stand down.
    queries_discarded: int = 0
    #: Why it has its role now, in words.
    why: str = ""


@dataclass(slots=True)
class _Link:
    iface: Interface
    family: socket.AddressFamily
    protocol: str
    election: Election
    discarded: int = 0
    last_reason: str = ""
    #: When the rival we stand down for last queried (loop time).
    other_heard: float = 0.0


class Querier:
    """Send IGMP and MLD general queries on every selected interface, as RFC 3376/3810 do.

    ``interfaces`` narrows the set (names or a predicate, as for
    :class:`MulticastEndpoint`). ``interval`` is the query interval (125 s by
    default, RFC 3376); queries carry it (QQIC) and a Max Response of
    ``min(10, interval / 2)`` seconds. ``igmp_version`` (2 or 3) and
    ``mld_version`` (1 or 2) pick the query format to suit the segment: version 3
    and 2 queries are understood by older hosts too. ``on_change`` is called with
    a :class:`QuerierState` whenever the querier takes over or stands down.
    It queries on the interfaces present at :meth:`start`; restart it to pick up
    new ones. Raises :class:`MulticastError` from :meth:`start` without CAP_NET_RAW,
    or where the platform has no querier (:func:`mcastio.capabilities`).
    """

    def __init__(
        self,
        *,
        interfaces: InterfaceSelector = None,
        interval: float = 125.0,
        igmp_version: int = 3,
        mld_version: int = 2,
        ipv4: bool = True,
        ipv6: bool = True,
        snapshot_source: Callable[[], Sequence[Interface]] | None = None,
        on_change: Callable[[QuerierState], None] | None = None,
    ) -> None:
        if igmp_version not in (2, 3):
            raise ValueError(f"igmp_version must be 2 or 3, not {igmp_version!r}")
        if mld_version not in (1, 2):
            raise ValueError(f"mld_version must be 1 or 2, not {mld_version!r}")
        if not (ipv4 or ipv6):
            raise ValueError("a querier needs ipv4 or ipv6 (or both)")
        if isinstance(interfaces, str):
            raise ValueError(f"interfaces must be a list of names, not the string {interfaces!r}")
        self._timing = Timing.for_interval(validate_interval(interval))
        self._versions = {socket.AF_INET: igmp_version, socket.AF_INET6: mld_version}
        self._families = [f for f, on in ((socket.AF_INET, ipv4), (socket.AF_INET6, ipv6)) if on]
        self._selector = interfaces
        self._snapshot_source = snapshot_source or read_snapshot
        self._on_change = on_change
        self._links: dict[tuple[str, socket.AddressFamily], _Link] = {}
        self._raw: dict[socket.AddressFamily, socket.socket] = {}
        self._watch: dict[socket.AddressFamily, socket.socket] = {}
        self._beacon: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._state = "new"

    @property
    def interval(self) -> float:
        return self._timing.interval

    @property
    def states(self) -> tuple[QuerierState, ...]:
        return tuple(self._state_of(link) for link in self._links.values())

    async def start(self) -> None:
        """Open the sockets and send the first queries."""
        if self._state == "open":
            return
        if self._state == "closed":
            raise MulticastError("this querier was closed; create a new one")
        caps = capabilities()
        if not caps.querier:
            raise unavailable("the querier (raw IGMP/MLD queries)", caps)
        from ._platform.linux import (
            rawnet as _rawnet,
        )  # Linux only: imported once the platform said yes.

        self._loop = asyncio.get_running_loop()
        snapshot = self._snapshot_source()
        try:
            for family in self._families:
                for iface in select_interfaces(snapshot, _PROBES[family], self._selector):
                    self._add_link(iface, family)
            if not self._links:
                raise MulticastError(
                    "no interface to query on: each needs to be up, multicast-capable "
                    "and to have an address of the family"
                )
            for family in {f for _, f in self._links}:
                self._raw[family] = _rawnet.open_raw(family, loop=True)
                sock = self._watch[family] = _rawnet.open_watch(family)
                self._loop.add_reader(sock.fileno(), self._on_watch, family)
            names = ",".join(sorted({name for name, _ in self._links}))
            try:
                self._beacon = _rawnet.open_beacon(
                    beacon_name("querier", names, os.getpid(), next(_serial))
                )
            except MulticastError as exc:
                _log.debug("no querier beacon for doctor: %s", exc)
        except RawAccessError as exc:
            self._close()
            raise MulticastError(
                f"the querier must send raw IGMP/MLD queries and cannot: {exc}. Run it "
                "as root, or give it the capability: setcap cap_net_raw+ep on the "
                "Python interpreter, or AmbientCapabilities=CAP_NET_RAW in a systemd unit"
            ) from exc
        except BaseException:
            self._close()
            raise
        self._state = "open"
        for link in self._links.values():
            _log.info(
                "querier on %s (%s) from %s, every %g s",
                link.iface.name,
                link.protocol,
                link.election.own,
                self._timing.interval,
            )
        self._tick()

    def _add_link(self, iface: Interface, family: socket.AddressFamily) -> None:
        own: ipaddress.IPv4Address | ipaddress.IPv6Address | None
        if family == socket.AF_INET:
            own = iface.ipv4[0].ip if iface.ipv4 else None
            protocol = f"IGMPv{self._versions[family]}"
        else:
            own = next((a.ip for a in iface.ipv6 if a.ip.is_link_local), None)
            protocol = f"MLDv{self._versions[family]}"
        if own is None:
            _log.warning("no %s source address on %s; not querying there", protocol, iface.name)
            return
        election = Election(own, startup_left=self._timing.robustness)
        self._links[(iface.name, family)] = _Link(iface, family, protocol, election)

    async def aclose(self) -> None:
        """Stop querying and close every socket. Idempotent."""
        self._close()

    def _close(self) -> None:
        self._state = "closed"
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for sock in self._watch.values():
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(sock.fileno())
            sock.close()
        for sock in self._raw.values():
            sock.close()
        if self._beacon is not None:
            self._beacon.close()
            self._beacon = None
        self._watch.clear()
        self._raw.clear()

    async def __aenter__(self) -> Querier:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _state_of(self, link: _Link) -> QuerierState:
        e = link.election
        if not e.querier:
            why = f"{e.other} has the lower address and queried"
            if self._loop is not None:
                why += f" {self._loop.time() - link.other_heard:.3g} s ago"
        else:
            why = "no valid query from a lower address heard"
            if self._state == "open":
                why += f" in the last {self._timing.other_present:g} s"
        if link.discarded:
            why += f"; {link.discarded} discarded as a host would (last: {link.last_reason})"
        return QuerierState(
            link.iface.name,
            link.protocol,
            str(e.own),
            "querier" if e.querier else "non-querier",
            str(e.other) if e.other is not None else None,
            e.sent,
            link.discarded,
            why,
        )

    def _on_watch(self, family: socket.AddressFamily) -> None:
        assert self._loop is not None
        from ._platform.linux import rawnet as _rawnet  # Loaded by start() already.

        try:
            packets = _rawnet.read_watch(self._watch[family])
        except MulticastError as exc:
            _log.warning("the querier stops listening for other queriers: %s", exc)
            self._loop.remove_reader(self._watch[family].fileno())
            return
        now = self._loop.time()
        for ifname, packet, outgoing in packets:
            link = self._links.get((ifname, family))
            # Our own queries: sent (outgoing) and looped back to this host.
            if outgoing or link is None:
                continue
            query, why = check_query(ifname, packet)
            if query is None:
                if why:
                    # What the hosts discard must not make us stand down either.
                    link.discarded += 1
                    link.last_reason = why
                continue
            was = link.election.querier
            link.election = heard(link.election, query.source, now, self._timing)
            if link.election.other == query.source:
                link.other_heard = now
            if was and not link.election.querier:
                self._changed(
                    link, f"{query.source} has the lower address and queries; standing down"
                )

    def _tick(self) -> None:
        assert self._loop is not None
        self._timer = None
        now = self._loop.time()
        for link in self._links.values():
            was = link.election.querier
            link.election, send = tick(link.election, now, self._timing)
            if not was and link.election.querier:
                self._changed(
                    link,
                    f"no query from a lower address for {self._timing.other_present:g} s; "
                    "querier again",
                )
            if send:
                self._send(link)
        if self._links:
            when = min(wake_at(link.election) for link in self._links.values())
            self._timer = self._loop.call_at(max(when, now + 0.001), self._tick)

    def _send(self, link: _Link) -> None:
        version = self._versions[link.family]
        build = igmp_query if link.family == socket.AF_INET else mld_query
        payload = build(version, self._timing.interval, self._timing.response)
        from ._platform.linux import rawnet as _rawnet  # Loaded by start() already.

        try:
            _rawnet.send_raw(
                self._raw[link.family],
                link.iface,
                str(link.election.own),
                payload,
                _ALL_HOSTS[link.family],
            )
        except MulticastError as exc:
            # The link may have gone; keep querying on the others.
            _log.warning("querier on %s: %s", link.iface.name, exc)

    def _changed(self, link: _Link, why: str) -> None:
        _log.info("querier on %s (%s): %s", link.iface.name, link.protocol, why)
        if self._on_change is not None:
            self._on_change(self._state_of(link))
