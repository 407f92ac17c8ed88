"""The membership keeper's decisions: pure, no sockets, no clock of its own.

A host reports a membership only when it joins and when it answers a query. With
no querier, or with queries the host drops (rp_filter, a firewall), a snooping
switch times the membership out after its membership interval (260 s with
RFC 3376's defaults) and the stream stops. The keeper tracks, per interface, when
the host last reported (its join, an accepted query it answers, the keeper's own
refresh) and says when to make it report again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Literal

__all__ = [
    "BEACON_PREFIX",
    "Heard",
    "KeepaliveState",
    "Mechanism",
    "Track",
    "beacon_name",
    "choose_mechanism",
    "due",
    "heard_query",
    "next_due",
    "parse_beacons",
    "refreshed",
    "state_of",
]

Mechanism = Literal["report", "source-filter", "none"]
Role = Literal["watching", "querier", "refreshing", "unable"]


def choose_mechanism(raw: bool, version: int, family_v6: bool) -> tuple[Mechanism, str]:
    """How to make the host report on one interface, and why not if it cannot.

    ``version`` is what the host speaks there: IGMP 1-3 or MLD 1-2.
    """
    if raw:
        # Our own current-state report: refreshes every switch mode measured.
        return "report", ""
    modern = version >= (2 if family_v6 else 3)
    if modern:
        # Blocking then unblocking a source that never sends changes the filter,
        # so the kernel sends a state-change report: no privilege needed.
        return "source-filter", ""
    proto = "MLDv1" if family_v6 else f"IGMPv{version}"
    return "none", (
        f"the host speaks {proto} here, which has no unprivileged way to report "
        "again; give the process CAP_NET_RAW or run 'mcastio querier' on the segment"
    )


@dataclass(frozen=True, slots=True)
class Track:
    """What the keeper knows about one interface's membership (monotonic seconds)."""

    interface: str
    index: int
    joined: float
    #: The last query the host accepted (and so answers) for the group.
    last_query: float | None = None
    querier: str | None = None
    last_refresh: float | None = None
    refreshes: int = 0
    #: Set once the keeper has said, at INFO, that it refreshes here.
    announced: bool = False


def heard_query(track: Track, when: float, source: str) -> Track:
    """The host accepted a query for the group (general or specific) on this interface.

    Only accepted ones count: the kernel answers them with a report. A query that
    rp_filter or a firewall drops never reaches the keeper's raw socket.
    """
    return replace(track, last_query=when, querier=source)


def refreshed(track: Track, when: float, *, counted: bool = True, announce: bool = False) -> Track:
    """The keeper acted at ``when``; ``counted`` when a report really left (not a failure)."""
    return replace(
        track,
        last_refresh=when,
        refreshes=track.refreshes + counted,
        announced=track.announced or announce,
    )


def _freshest(track: Track) -> float:
    return max(t for t in (track.joined, track.last_query, track.last_refresh) if t is not None)


def due(track: Track, now: float, interval: float) -> bool:
    """Whether the host has not reported for ``interval`` seconds: no join, no accepted
    query (which it answers), no refresh. Then the keeper must make it report."""
    return now - _freshest(track) >= interval


def next_due(tracks: Iterable[Track], interval: float) -> float | None:
    """The monotonic time of the next refresh, or ``None`` with nothing to keep."""
    times = [_freshest(t) + interval for t in tracks]
    return min(times) if times else None


@dataclass(frozen=True, slots=True)
class KeepaliveState:
    """The membership keeper on one interface (see ``MulticastEndpoint.keepalive_state``)."""

    interface: str
    #: ``"watching"``: nothing due yet; ``"querier"``: the host accepts a querier's
    #: queries and answers them; ``"refreshing"``: no accepted query, the keeper
    #: makes the reports; ``"unable"``: it cannot make this host report (see ``reason``).
    role: Role
    #: ``"report"`` (a raw report, needs CAP_NET_RAW), ``"source-filter"``
    #: (block and unblock a dummy source: IGMPv3/MLDv2 hosts, unprivileged) or ``"none"``.
    mechanism: Mechanism
    #: Address of the last querier whose query the host accepted here, if any.
    querier: str | None
    #: Whether queries were watched here (needs CAP_NET_RAW); without it the
    #: keeper refreshes every interval, since it cannot tell.
    watching_queries: bool
    refreshes: int
    #: Seconds since the host last accepted a query here, if it did.
    query_age: float | None
    reason: str = ""
    #: The group this keeper refreshes (an endpoint may hold several).
    group: str = ""
    #: Queries heard here that a host discards (bad checksum, TTL or hop limit not
    #: 1, no Router Alert for MLD, a source MLD rejects, ...): they never count.
    queries_discarded: int = 0
    #: Queries heard here past the rate limit, read and dropped unjudged.
    queries_rate_limited: int = 0
    #: Why the keeper has its role now, in words.
    why: str = ""


@dataclass(frozen=True, slots=True)
class Heard:
    """What the shared query socket heard on one interface (see ``_querywatch``)."""

    discarded: int = 0
    rate_limited: int = 0
    last_reason: str = ""


def state_of(
    track: Track,
    now: float,
    interval: float,
    mechanism: Mechanism,
    reason: str,
    watching_queries: bool,
    heard: Heard = Heard(),
) -> KeepaliveState:
    answered = track.last_query is not None and now - track.last_query < interval
    age = now - track.last_query if track.last_query is not None else None
    role: Role
    if mechanism == "none" or reason:
        role, why = "unable", reason
    elif answered:
        role, why = "querier", f"the host accepted a query from {track.querier} {age:.3g} s ago"
    else:
        role = "refreshing" if track.refreshes else "watching"
        if not watching_queries:
            why = "cannot hear queries without CAP_NET_RAW, so it refreshes every interval"
        else:
            why = f"no query accepted in the last {interval:g} s"
        if role == "watching":
            why = "nothing due yet; " + why
        if heard.discarded:
            why += f"; {heard.discarded} discarded as a host would (last: {heard.last_reason})"
    return KeepaliveState(
        track.interface,
        role,
        mechanism,
        track.querier,
        watching_queries,
        track.refreshes,
        age,
        reason,
        queries_discarded=heard.discarded,
        queries_rate_limited=heard.rate_limited,
        why=why,
    )


# Abstract AF_UNIX names, one per event loop with keepers (_beacons) and one per
# querier: per network namespace, gone with the process, in /proc/net/unix for doctor.
BEACON_PREFIX = "mcastio/"


def beacon_name(kind: Literal["keepalive", "querier"], detail: str, pid: int, serial: int) -> str:
    return f"{BEACON_PREFIX}{kind}/{detail}/{pid}.{serial}"


def parse_beacons(text: str) -> tuple[tuple[str, str], ...]:
    """(kind, detail) of every keeper and querier beacon in /proc/net/unix."""
    found: list[tuple[str, str]] = []
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 8 or not parts[-1].startswith("@" + BEACON_PREFIX):
            continue
        fields = parts[-1][1 + len(BEACON_PREFIX) :].split("/")
        if len(fields) == 3 and fields[0] in ("keepalive", "querier"):
            found.append((fields[0], fields[1]))
    return tuple(found)
