"""The backup querier's decisions: RFC 3376 §6.6.2 / RFC 3810 §7.6.2 election. Pure.

Every querier on a link starts as the querier. One that hears a query from a
lower address stands down, and becomes the querier again when it has heard
none for the other-querier-present interval. The runtime is :mod:`._querier`.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass, replace

__all__ = [
    "Election",
    "Timing",
    "counts_in_election",
    "heard",
    "tick",
    "validate_interval",
    "wake_at",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: RFC 3376 §8.2 / RFC 3810 §9.2: the default Query Interval.
DEFAULT_QUERY_INTERVAL = 125.0


def validate_interval(value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"interval must be a number of seconds, not {value!r}")
    if not math.isfinite(value) or not 0.1 <= value <= 31744:
        # 31744 s is the largest Querier's Query Interval Code can carry.
        raise ValueError(f"interval must be from 0.1 to 31744 seconds, not {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True)
class Timing:
    """The RFC 3376 §8 timers of one querier, derived from its query interval."""

    interval: float = DEFAULT_QUERY_INTERVAL
    #: Query Response Interval (Max Resp), 10 s by default; below ``interval``.
    response: float = 10.0
    robustness: int = 2

    @classmethod
    def for_interval(cls, interval: float) -> Timing:
        return cls(interval, min(10.0, interval / 2))

    @property
    def other_present(self) -> float:
        """Other Querier Present Interval (§8.5): robustness x interval + response / 2."""
        return self.robustness * self.interval + self.response / 2

    @property
    def startup_interval(self) -> float:
        """§8.6: the first ``robustness`` queries go out at a quarter of the interval."""
        return self.interval / 4


@dataclass(frozen=True, slots=True)
class Election:
    """One querier's view of one link and protocol (monotonic seconds)."""

    own: IPAddress
    querier: bool = True
    #: The lower-addressed querier we stood down for.
    other: IPAddress | None = None
    other_until: float = 0.0
    next_query: float = 0.0
    startup_left: int = 2
    sent: int = 0


def counts_in_election(source: IPAddress, own: IPAddress) -> bool:
    """Whether a valid query from ``source`` takes part in the election at all.

    Not from 0.0.0.0 or ``::``: snooping switches send proxy queries from 0.0.0.0
    (RFC 4541 §2.1.1), which must not silence a real querier, and an MLD query from
    ``::`` is discarded by every node (RFC 3810 §5.1.14). Not from a multicast or
    broadcast address, which no router has. (Bad checksums, TTL, lengths and MLD's
    link-local rule are :func:`._igmp.check_query`'s.)
    """
    if source.version != own.version or int(source) == 0 or source.is_multicast:
        return False
    return not (source.version == 4 and source == ipaddress.IPv4Address("255.255.255.255"))


def heard(election: Election, source: IPAddress, now: float, timing: Timing) -> Election:
    """A valid query from ``source`` arrived: stand down if it has the lower address."""
    if not counts_in_election(source, election.own) or int(source) >= int(election.own):
        return election
    return replace(election, querier=False, other=source, other_until=now + timing.other_present)


def tick(election: Election, now: float, timing: Timing) -> tuple[Election, bool]:
    """Advance to ``now``: (the new state, whether to send a general query now)."""
    if not election.querier:
        if now < election.other_until:
            return election, False
        # The other querier went quiet: take over, at once (§6.6.2).
        election = replace(election, querier=True, other=None, next_query=now)
    if now < election.next_query:
        return election, False
    startup = election.startup_left > 0
    return (
        replace(
            election,
            next_query=now + (timing.startup_interval if startup else timing.interval),
            startup_left=max(0, election.startup_left - 1),
            sent=election.sent + 1,
        ),
        True,
    )


def wake_at(election: Election) -> float:
    """When :func:`tick` next has something to do."""
    return election.next_query if election.querier else election.other_until
