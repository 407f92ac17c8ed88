"""What ``mcastio doctor`` reads and reports: host state, findings, candidate interfaces.

Pure values: :class:`HostState` holds what was read from /proc, the sysctls and the
packet capture (see ``hoststate``), and ``doctor.diagnose`` turns it into
:class:`Finding` values. Finding ids are a public interface; keep them stable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from .._igmp import QuerySeen
from .._model import Group, Interface, is_eligible, parse_group
from .._platform.linux.procnet import (
    IgmpDevice,
    Membership,
    Route,
)

__all__ = [
    "FINDING_IDS",
    "QUERY_INTERVAL",
    "Finding",
    "HostState",
    "candidates",
    "names_of",
    "v4_candidates",
]

Severity = Literal["info", "warning", "error"]

FINDING_IDS = (
    "multi-homed-default-route",
    "rp-filter-strict",
    "querier-implausible-address",
    "no-querier",
    "querier-seen",
    "keeper-active",
    "querier-active",
    "membership-limit",
    "igmp-version",
    "group-scope",
)

# RFC 3376 §8.2: the default Query Interval. A shorter window can miss a query.
QUERY_INTERVAL = 125.0
_PROBE_V4 = parse_group("239.255.255.250")


@dataclass(frozen=True, slots=True)
class Finding:
    """One diagnosis. ``evidence`` lists what was observed; ``fix`` what to do."""

    id: str
    severity: Severity
    message: str
    interface: str | None = None
    evidence: tuple[str, ...] = ()
    fix: str = ""

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "severity": self.severity,
            "interface": self.interface,
            "message": self.message,
            "evidence": list(self.evidence),
            "fix": self.fix,
        }


@dataclass(frozen=True, slots=True)
class HostState:
    """Everything doctor looked at, read once; see ``_hoststate.collect``."""

    interfaces: tuple[Interface, ...]
    igmp: tuple[IgmpDevice, ...] = ()
    igmp6: tuple[Membership, ...] = ()
    #: rp_filter per ``conf`` name, including ``"all"``.
    rp_filter: Mapping[str, int] = field(default_factory=dict)
    #: force_igmp_version per ``conf`` name, including ``"all"``.
    force_igmp_version: Mapping[str, int] = field(default_factory=dict)
    igmp_max_memberships: int | None = None
    routes: tuple[Route, ...] = ()
    rpf_drops_before: int | None = None
    rpf_drops_after: int | None = None
    #: ``None`` when queries were not watched; see ``capture_skipped``.
    queries: tuple[QuerySeen, ...] | None = None
    capture_skipped: str | None = None
    duration: float = 0.0
    #: mcastio helpers running in this network namespace, from their beacons in
    #: /proc/net/unix: ("keepalive", group) and ("querier", "eth1,eth2").
    helpers: tuple[tuple[str, str], ...] = ()


def candidates(state: HostState, group: Group | None) -> tuple[Interface, ...]:
    probe = group or _PROBE_V4
    return tuple(i for i in state.interfaces if is_eligible(i, probe))


def v4_candidates(state: HostState) -> tuple[Interface, ...]:
    return tuple(i for i in state.interfaces if is_eligible(i, _PROBE_V4))


def names_of(ifaces: Sequence[Interface]) -> str:
    return ", ".join(i.name for i in ifaces)
