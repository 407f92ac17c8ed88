"""``mcastio doctor``: find the article's traps from a pure reading of the host.

Everything here is pure: :func:`diagnose` turns a :class:`HostState` (see
``findings`` and ``hoststate``) into findings.
Finding ids are a public interface; keep them stable.
"""

from __future__ import annotations

import ipaddress
import math
import socket
from collections.abc import Sequence

from .._igmp import IPAddress, QuerySeen
from .._model import Group, Interface
from .._platform.linux.procnet import (
    effective_rp_filter,
    lookup_route,
    rp_filter_name,
)
from .findings import (
    FINDING_IDS,
    QUERY_INTERVAL,
    Finding,
    HostState,
    candidates,
    names_of,
    v4_candidates,
)
from .groupinfo import ethernet_mac, mac_collisions, mac_siblings, scope_summary
from .remedies import KEEP_ALIVE_FIX, check_helpers, queried_here

__all__ = ["FINDING_IDS", "Finding", "HostState", "diagnose"]


def diagnose(state: HostState, group: Group | None = None) -> tuple[Finding, ...]:
    """Every finding for ``state``, most fundamental first."""
    return (
        *check_multi_homed(state, group),
        *check_rp_filter(state),
        *check_queriers(state, group),
        *check_helpers(state),
        *check_membership_limit(state, group),
        *check_igmp_version(state, group),
        *check_group_scope(state, group),
    )


def check_multi_homed(state: HostState, group: Group | None) -> list[Finding]:
    ifaces = candidates(state, group)
    if len(ifaces) < 2:
        return []
    defaults = [i for i in ifaces if i.is_default]
    others = [i for i in ifaces if not i.is_default]
    if defaults:
        where = defaults[0].name
        message = (
            f"{len(ifaces)} multicast-capable interfaces are up ({names_of(ifaces)}). "
            f"The default route uses {where}, so a naive program that joins with "
            f"INADDR_ANY and sends without IP_MULTICAST_IF joins and sends on {where} "
            f"only, and never sees {names_of(others)}."
        )
    else:
        where = None
        message = (
            f"{len(ifaces)} multicast-capable interfaces are up ({names_of(ifaces)}) and "
            "none carries a default route: a naive join with INADDR_ANY fails with "
            "ENODEV, and sends go wherever a route to 224.0.0.0/4 points, if anywhere."
        )
    evidence = tuple(
        f"{i.name}: index {i.index}, {', '.join(map(str, i.ipv4 + i.ipv6)) or 'no address'}"
        + (" (default route)" if i.is_default else "")
        for i in ifaces
    )
    return [
        Finding(
            "multi-homed-default-route",
            "warning",
            message,
            where,
            evidence,
            "Join on every interface and send one copy out of each (IP_ADD_MEMBERSHIP "
            "per interface, IP_MULTICAST_IF per send); mcastio's MulticastEndpoint "
            "does this.",
        )
    ]


def _rp(state: HostState, name: str) -> tuple[int, int | None, int | None]:
    all_value = state.rp_filter.get("all")
    own = state.rp_filter.get(name)
    return effective_rp_filter(all_value, own), all_value, own


def _rp_evidence(state: HostState, name: str) -> str:
    eff, all_value, own = _rp(state, name)
    label = rp_filter_name(eff)
    return (
        f"net.ipv4.conf.all.rp_filter={all_value}, net.ipv4.conf.{name}.rp_filter={own}: "
        f"effective {eff} ({label}; the kernel uses the larger)"
    )


def _rpf_delta(state: HostState) -> int | None:
    if state.rpf_drops_before is None or state.rpf_drops_after is None:
        return None
    return state.rpf_drops_after - state.rpf_drops_before


def _rpf_evidence(state: HostState) -> str:
    delta = _rpf_delta(state)
    if delta is None:
        return "IPReversePathFilter counter unavailable (/proc/net/netstat)"
    return (
        f"IPReversePathFilter in /proc/net/netstat rose by {delta} during the "
        f"{state.duration:g} s window ({state.rpf_drops_before} -> {state.rpf_drops_after})"
    )


def _loosen(name: str) -> str:
    return f"sysctl -w net.ipv4.conf.all.rp_filter=2 net.ipv4.conf.{name}.rp_filter=2"


def check_rp_filter(state: HostState) -> list[Finding]:
    ifaces = v4_candidates(state)
    if len(ifaces) < 2:
        return []
    delta = _rpf_delta(state)
    rising = delta is not None and delta > 0
    findings = []
    strict = [i for i in ifaces if _rp(state, i.name)[0] == 1]
    # The counter is host-wide; a captured query it must have dropped pins it to one.
    dropped_on = {
        iface.name: [
            q.source
            for q in state.queries or ()
            if q.interface == iface.name
            and isinstance(q.source, ipaddress.IPv4Address)
            and _rp_drops(state, iface, q.source)
        ]
        for iface in strict
    }
    pinned = any(dropped_on.values())
    for iface in strict:
        dropped = dropped_on[iface.name]
        evidence = [_rp_evidence(state, iface.name)]
        if dropped:
            # The counter is host-wide: it goes with the interface a captured
            # query pins it to, not with every strict one.
            evidence.append(_rpf_evidence(state))
            evidence.append(
                f"IGMP queries on {iface.name} from {dropped[0]} fail the reverse-path check"
            )
        elif rising and not pinned:
            evidence.append(_rpf_evidence(state) + "; host-wide, not pinned to an interface")
        findings.append(
            Finding(
                "rp-filter-strict",
                "error" if dropped else "warning",
                f"rp_filter is strict on {iface.name}: on this multi-homed host the kernel "
                f"drops multicast and IGMP queries arriving on {iface.name} from any source "
                f"it would not route back out of {iface.name}."
                + (
                    " Queries dropped on this interface made the host's reverse-path "
                    "drop counter rise while doctor watched."
                    if dropped and rising
                    else ""
                ),
                iface.name,
                tuple(evidence),
                f"Use loose mode ({_loosen(iface.name)}; 'all' must drop too, since the "
                "larger value wins), or make sure senders and queriers use addresses "
                f"in {iface.name}'s subnets. {KEEP_ALIVE_FIX}",
            )
        )
    return findings


def _plausible(iface: Interface, source: ipaddress.IPv4Address) -> bool:
    # 0.0.0.0 is what a querier without an address uses; Linux accepts it for IGMP.
    return int(source) == 0 or any(source in a.network for a in iface.ipv4)


def _rp_drops(state: HostState, iface: Interface, source: ipaddress.IPv4Address) -> str | None:
    """Why rp_filter drops packets from ``source`` on ``iface``, or ``None`` if it does not."""
    eff = _rp(state, iface.name)[0]
    route = lookup_route(state.routes, source)
    if eff == 1 and (route is None or route.interface != iface.name):
        back = f"via {route.interface}" if route else "nowhere (no route)"
        return f"rp_filter is strict on {iface.name} and the route back to {source} leads {back}"
    if eff == 2 and route is None:
        return f"rp_filter is loose on {iface.name} and there is no route at all to {source}"
    return None


def _no_querier(state: HostState, iface: Interface, protocol: str) -> Finding:
    short = state.duration < QUERY_INTERVAL
    return Finding(
        "no-querier",
        "info" if short else "warning",
        f"No {protocol} query was seen on {iface.name} in {state.duration:g} s. Without "
        "a querier, snooping switches forget this host's memberships after "
        "their membership interval (260 s by default): multicast works for a "
        "few minutes and then stops."
        + (
            f" Queriers send every {QUERY_INTERVAL:g} s by default, so a short window can miss one."
            if short
            else ""
        ),
        iface.name,
        (f"0 {protocol} queries captured on {iface.name} in {state.duration:g} s",),
        f"Enable the {protocol} querier on the switch (with an address in this "
        "subnet), or run one: 'mcastio querier' on a host of the segment, or a Linux "
        f"bridge with mcast_querier 1. {KEEP_ALIVE_FIX}"
        + (f" Re-run with --duration {QUERY_INTERVAL + 5:g} to be sure." if short else ""),
    )


def _seen_text(iface: Interface, source: IPAddress, queries: Sequence[QuerySeen]) -> str:
    versions = "/v".join(map(str, sorted({q.version for q in queries})))
    return (
        f"{len(queries)} {queries[0].protocol}v{versions} "
        f"quer{'y' if len(queries) == 1 else 'ies'} from {source} on {iface.name}"
    )


def _by_source(queries: Sequence[QuerySeen]) -> dict[IPAddress, list[QuerySeen]]:
    result: dict[IPAddress, list[QuerySeen]] = {}
    for q in queries:
        result.setdefault(q.source, []).append(q)
    return result


def check_queriers(state: HostState, group: Group | None = None) -> list[Finding]:
    if state.queries is None:
        return [
            Finding(
                "no-querier",
                "info",
                "Skipped the querier check: "
                + (state.capture_skipped or "queries were not watched")
                + ".",
                None,
                (),
                "Run 'mcastio doctor' as root (or with CAP_NET_RAW) to watch for queries.",
            )
        ]
    findings: list[Finding] = []
    for iface in v4_candidates(state):
        seen = [q for q in state.queries if q.interface == iface.name and q.source.version == 4]
        if not seen and queried_here(state, iface):
            continue  # our own querier's queries leave the host; check_helpers says so
        if not seen:
            findings.append(_no_querier(state, iface, "IGMP"))
            continue
        for source, queries in _by_source(seen).items():
            if isinstance(source, ipaddress.IPv4Address):
                findings.append(_judge_igmp_querier(state, iface, source, queries))
    if group is not None and group.family == socket.AF_INET6:
        for iface in candidates(state, group):
            seen = [q for q in state.queries if q.interface == iface.name and q.source.version == 6]
            if not seen and queried_here(state, iface):
                continue
            if not seen:
                findings.append(_no_querier(state, iface, "MLD"))
                continue
            for source, queries in _by_source(seen).items():
                findings.append(_judge_mld_querier(iface, source, queries))
    return findings


def _judge_mld_querier(
    iface: Interface, source: IPAddress, queries: Sequence[QuerySeen]
) -> Finding:
    seen_text = _seen_text(iface, source, queries)
    if source.is_link_local:
        return Finding(
            "querier-seen",
            "info",
            f"An MLD querier at {source} is active on {iface.name}.",
            iface.name,
            (seen_text,),
        )
    return Finding(
        "querier-implausible-address",
        "error",
        f"MLD queries on {iface.name} come from {source}, which is not a link-local "
        "address. Linux ignores such queries (RFC 2710 §3 and RFC 3810 require link-local) and "
        "never answers them: snooping switches time out this host's IPv6 memberships.",
        iface.name,
        (seen_text, "MLD queries must come from a link-local (fe80::/10) source"),
        "Configure the MLD querier (usually the switch) to send from its link-local address.",
    )


def _judge_igmp_querier(
    state: HostState,
    iface: Interface,
    source: ipaddress.IPv4Address,
    queries: Sequence[QuerySeen],
) -> Finding:
    seen_text = _seen_text(iface, source, queries)
    if _plausible(iface, source):
        return Finding(
            "querier-seen",
            "info",
            f"A querier at {source} is active on {iface.name}.",
            iface.name,
            (seen_text,),
        )
    subnets = ", ".join(str(a.network) for a in iface.ipv4)
    drop = _rp_drops(state, iface, source)
    if drop:
        message = (
            f"IGMP queries on {iface.name} come from {source}, outside "
            f"{iface.name}'s subnets ({subnets}). {drop}, so the kernel drops the "
            "queries and never answers them: snooping switches time out this "
            "host's memberships and multicast stops."
        )
    else:
        message = (
            f"IGMP queries on {iface.name} come from {source}, outside "
            f"{iface.name}'s subnets ({subnets}). rp_filter lets them through "
            "today; a strict rp_filter, or a route change, would drop them."
        )
    route = lookup_route(state.routes, source)
    evidence = [
        seen_text,
        f"route to {source}: via {route.interface}" if route else f"no route to {source}",
        _rp_evidence(state, iface.name),
    ]
    if drop:
        evidence.append(_rpf_evidence(state))
    return Finding(
        "querier-implausible-address",
        "error" if drop else "warning",
        message,
        iface.name,
        tuple(evidence),
        f"Configure the querier (usually the switch) with an address in "
        f"{subnets}: its own management address or one reserved for it. "
        f"Or, as a workaround on this host: {_loosen(iface.name)}. {KEEP_ALIVE_FIX}",
    )


def check_membership_limit(state: HostState, group: Group | None) -> list[Finding]:
    if group is not None and group.family != socket.AF_INET:
        return []
    limit = state.igmp_max_memberships
    if limit is None:
        return []
    needed = len(candidates(state, group))
    what = str(group) if group else "one IPv4 group"
    sockets = max(1, math.ceil(needed / limit)) if limit > 0 else 0
    evidence = (
        f"net.ipv4.igmp_max_memberships={limit} (per socket)",
        f"{what} on every eligible interface needs {needed} membership(s)",
    )
    if needed > limit:
        return [
            Finding(
                "membership-limit",
                "warning",
                f"Joining {what} on all {needed} interfaces needs {needed} memberships, "
                f"but one socket may hold only {limit}: a program with one socket gets "
                f"ENOBUFS from the {limit + 1}th join. mcastio spreads the joins over "
                f"{sockets} sockets.",
                None,
                evidence,
                f"sysctl -w net.ipv4.igmp_max_memberships={max(needed * 2, 20)}",
            )
        ]
    return [
        Finding(
            "membership-limit",
            "info",
            f"Joining {what} on all {needed} interface(s) fits in one socket's limit of {limit}.",
            None,
            evidence,
        )
    ]


def _forced(state: HostState, name: str) -> int:
    values = (state.force_igmp_version.get("all", 0), state.force_igmp_version.get(name, 0))
    # The kernel checks for 1 before 2: a forced v1 anywhere wins (IGMP_V1_SEEN).
    for version in (1, 2, 3):
        if version in values:
            return version
    return 0


def check_igmp_version(state: HostState, group: Group | None) -> list[Finding]:
    ifaces = v4_candidates(state)
    devices = {d.interface: d for d in state.igmp}
    ssm = group is not None and group.scope == "source-specific"
    findings: list[Finding] = []
    plain: list[str] = []
    for iface in ifaces:
        device = devices.get(iface.name)
        running = device.querier if device else "V3"
        forced = _forced(state, iface.name)
        evidence = (
            f"/proc/net/igmp: {iface.name} speaks IGMP{running.lower()}",
            f"force_igmp_version: all={state.force_igmp_version.get('all', 0)}, "
            f"{iface.name}={state.force_igmp_version.get(iface.name, 0)}",
        )
        if running == "V3" and forced in (0, 3):
            plain.append(iface.name)
            continue
        cause = (
            f"force_igmp_version={forced}"
            if forced in (1, 2)
            else f"it heard an IGMP{running.lower()} querier and fell back"
        )
        message = f"{iface.name} speaks IGMP{running.lower()}: {cause}."
        if ssm:
            message += f" Source-specific group {group} needs IGMPv3; joins with a source fail."
        findings.append(
            Finding(
                "igmp-version",
                "error" if ssm else "info",
                message,
                iface.name,
                evidence,
                "Set force_igmp_version to 0 and make the querier speak IGMPv3." if ssm else "",
            )
        )
    if plain:
        findings.append(
            Finding(
                "igmp-version",
                "info",
                f"IGMPv3 on {', '.join(plain)} (nothing forced, no fallback).",
                None,
                (f"/proc/net/igmp: V3 on {', '.join(plain)}",),
            )
        )
    return findings


def _in_use(state: HostState) -> list[tuple[str, ipaddress.IPv4Address | ipaddress.IPv6Address]]:
    # Only what goes on a wire matters: links mcastio would use, no ff01:: groups.
    wire = {i.name for i in state.interfaces if i.multicast and not i.loopback}
    pairs: list[tuple[str, ipaddress.IPv4Address | ipaddress.IPv6Address]] = [
        (m.interface, m.group) for d in state.igmp for m in d.groups if m.interface in wire
    ]
    pairs.extend(
        (m.interface, m.group)
        for m in state.igmp6
        if m.interface in wire and m.group.packed[1] & 0x0F > 1
    )
    return pairs


def check_group_scope(state: HostState, group: Group | None) -> list[Finding]:
    findings: list[Finding] = []
    in_use = _in_use(state)
    if group is not None:
        mac = ethernet_mac(group.address)
        evidence: list[str] = [f"Ethernet MAC {mac}"]
        if isinstance(group.address, ipaddress.IPv4Address):
            siblings = mac_siblings(group.address)
            evidence.append(
                f"the {len(siblings)} other groups on {mac}: " + ", ".join(map(str, siblings))
            )
            shares = f"; it shares that MAC with {len(siblings)} other groups"
        else:
            shares = " (33:33 and the group's last 32 bits)"
        findings.append(
            Finding(
                "group-scope",
                "info",
                f"{group} is {scope_summary(group)}. Its Ethernet MAC is {mac}{shares}.",
                None,
                tuple(evidence),
            )
        )
        in_use.extend((i.name, group.address) for i in candidates(state, group))
    for collision in mac_collisions(in_use):
        listed = ", ".join(map(str, collision.groups))
        findings.append(
            Finding(
                "group-scope",
                "warning",
                f"On {collision.interface}, groups {listed} share the Ethernet MAC "
                f"{collision.mac}: the NIC and snooping switches cannot tell them apart, "
                "so this host also receives the other groups' traffic and drops it in "
                "software.",
                collision.interface,
                (f"memberships on {collision.interface}: {listed}",),
                "Pick groups that differ in their low 23 bits (e.g. within 239.255.0.0/16)."
                if collision.mac.startswith("01:")
                else "Pick IPv6 groups that differ in their last 32 bits.",
            )
        )
    return findings
