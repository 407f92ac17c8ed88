"""Which membership reports one refresh of one interface sends. Pure.

The shared keeper (:mod:`._linkreports`) refreshes every group joined on an
interface at once: IGMPv3 and MLDv2 carry many group records per report, so the
host sends one report per refresh (or as many as the link's MTU needs) instead of
one per group. IGMPv1/v2 and MLDv1 reports name one group each and go to that
group, so there it stays one report per group.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ._igmp import (
    IGMPV3_REPORTS,
    MLDV2_REPORTS,
    IPAddress,
    igmp_report,
    igmpv3_report,
    mld_report,
    mldv2_report,
)

__all__ = ["Record", "Report", "capacity", "gather", "merge", "plan"]

#: A group and its sources; no sources: any source (MODE_IS_EXCLUDE {}).
Record = tuple[IPAddress, tuple[IPAddress, ...]]

# What surrounds the records: the IPv4 header with its Router Alert option (24) or
# the IPv6 header and its hop-by-hop header (40 + 8), then the report's own 8 bytes.
_V4_OVERHEAD = 24 + 8
_V6_OVERHEAD = 40 + 8 + 8
# A record is 4 bytes of type and counts, the group, then its sources.
_V4_RECORD, _V4_ADDR = 8, 4
_V6_RECORD, _V6_ADDR = 20, 16
# The IPv4 total length and the IPv6 payload length are 16-bit fields.
_MAX_PACKET = 0xFFFF


@dataclass(frozen=True, slots=True)
class Report:
    """One report on the wire: the IGMP or ICMPv6 message and where it goes."""

    payload: bytes
    dest: IPAddress
    #: The records it carries, in order (a group's sources may span reports).
    records: tuple[Record, ...]


def merge(records: Iterable[tuple[IPAddress, Sequence[IPAddress]]]) -> tuple[Record, ...]:
    """The host's combined filter per group, as the kernel reports it (RFC 3376 §3.2).

    Several endpoints may hold one group on one interface: any of them taking any
    source makes it EXCLUDE {}; else it is INCLUDE the union of their sources.
    Sorted, so the same memberships always give the same reports.
    """
    combined: dict[IPAddress, set[IPAddress] | None] = {}
    for group, sources in records:
        if group in combined and combined[group] is None:
            continue
        if not sources:
            combined[group] = None
        else:
            have = combined.get(group)
            combined[group] = (have or set()) | set(sources)
    return tuple(
        (group, tuple(sorted(sources or ())))
        for group, sources in sorted(combined.items(), key=lambda kv: int(kv[0]))
    )


def gather(waits: Sequence[tuple[float | None, float]], lead: float = 0.0) -> tuple[int, ...]:
    """Which members one refresh of an interface carries: none unless one is due.

    ``waits`` holds, per member, (seconds until it is due, ``None``: nothing held
    there; how early it may come, its window). A member counts as due ``lead`` of
    its window early (a fraction, 0 to 1): interfaces with different leads refresh
    at different moments, not all in one pass of the loop. Once one is due, every
    member due within one window more comes along: refreshing early is harmless,
    and members phased apart fall into step (the next refresh, for the first left
    out, takes along those refreshed now), so later refreshes carry them all at once.
    """
    if not any(wait is not None and wait <= lead * window for wait, window in waits):
        return ()
    return tuple(
        i
        for i, (wait, window) in enumerate(waits)
        if wait is not None and wait <= (1 + lead) * window
    )


def capacity(v6: bool, mtu: int) -> int:
    """Bytes of group records one report may carry on a link of ``mtu``."""
    return min(mtu, _MAX_PACKET) - (_V6_OVERHEAD if v6 else _V4_OVERHEAD)


def plan(records: Sequence[Record], *, v6: bool, version: int, mtu: int) -> tuple[Report, ...]:
    """The reports that tell a switch about every one of ``records`` (see :func:`merge`).

    ``version`` is what the host speaks on the link: IGMP 1-3 or MLD 1-2. Version 3
    (MLD 2) packs records into as few reports as fit ``mtu``; a record whose sources
    do not fit one report is split across several, each source in exactly one
    (RFC 3376 §4.2.16). Older versions send one report per group. ValueError if
    not even one record with one source fits ``mtu``.
    """
    if version < (2 if v6 else 3):
        return tuple(_single(group, version) for group, _ in records)
    record_size, addr_size = (_V6_RECORD, _V6_ADDR) if v6 else (_V4_RECORD, _V4_ADDR)
    room = capacity(v6, mtu)
    if room < record_size + addr_size:
        raise ValueError(f"an MTU of {mtu} bytes holds no membership report")
    reports: list[list[Record]] = []
    current: list[Record] = []
    free = room
    for group, sources in records:
        left = sources
        while True:
            if free < record_size + (addr_size if left else 0):
                reports.append(current)
                current, free = [], room
            fits = (free - record_size) // addr_size
            part, left = left[:fits], left[fits:]
            current.append((group, part))
            free -= record_size + addr_size * len(part)
            if not left:
                break
    if current:
        reports.append(current)
    return tuple(_multi(chunk, v6) for chunk in reports)


def _single(group: IPAddress, version: int) -> Report:
    payload: bytes
    dest: IPAddress
    if isinstance(group, ipaddress.IPv6Address):
        payload, dest = mld_report(version, group)
    else:
        payload, dest = igmp_report(version, group)
    return Report(payload, dest, ((group, ()),))


def _multi(records: list[Record], v6: bool) -> Report:
    if v6:
        payload = mldv2_report(records)  # type: ignore[arg-type]
        return Report(payload, MLDV2_REPORTS, tuple(records))
    return Report(igmpv3_report(records), IGMPV3_REPORTS, tuple(records))  # type: ignore[arg-type]
