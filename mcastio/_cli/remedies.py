"""mcastio's own remedies for a membership that times out, as doctor reports them.

The membership keeper (in every endpoint) and ``mcastio querier`` announce
themselves with abstract unix sockets (see ``_keeper.parse_beacons``); doctor
reads those from /proc/net/unix and says what runs. Pure.
"""

from __future__ import annotations

from .._beacons import beacon_groups
from .._model import Interface
from .findings import Finding, HostState

__all__ = ["KEEP_ALIVE_FIX", "check_helpers", "queried_here"]


# Where the fix for a membership that times out points: mcastio's own remedies.
KEEP_ALIVE_FIX = (
    "On this host, mcastio's membership keeper (MulticastEndpoint(..., keepalive=True), "
    "on by default) keeps its own memberships alive, and 'mcastio querier' queries for "
    "the whole segment from this host's own address."
)


def queried_here(state: HostState, iface: Interface) -> bool:
    return any(
        kind == "querier" and iface.name in detail.split(",") for kind, detail in state.helpers
    )


def check_helpers(state: HostState) -> list[Finding]:
    """Say when mcastio's keeper or querier runs in this network namespace."""
    findings: list[Finding] = []
    # A beacon names the groups of one event loop's keepers, as many as fit, "+N" more.
    named: set[str] = set()
    unnamed = 0
    for kind, detail in state.helpers:
        if kind == "keepalive":
            shown, more = beacon_groups(detail)
            named.update(shown)
            unnamed += more
    groups = sorted(named)
    if groups:
        listed = ", ".join(groups) + (f" and {unnamed} more" if unnamed else "")
        findings.append(
            Finding(
                "keeper-active",
                "info",
                f"mcastio's membership keeper is active for {listed}: it makes "
                "this host report again when no query is answered, so a snooping switch "
                "without a (reachable) querier keeps those memberships.",
                None,
                tuple(f"keepalive beacon for {g} in /proc/net/unix" for g in groups),
            )
        )
    for detail in sorted({d for kind, d in state.helpers if kind == "querier"}):
        findings.append(
            Finding(
                "querier-active",
                "info",
                f"'mcastio querier' runs on this host ({detail}): it sends general queries "
                "from each interface's own address and stands down for a querier with a "
                "lower address.",
                None,
                (f"querier beacon for {detail} in /proc/net/unix",),
            )
        )
    return findings
