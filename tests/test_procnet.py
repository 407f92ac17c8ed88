"""Parsers for /proc/net files, against captured kernel output."""

from __future__ import annotations

import ipaddress

from mcastio._platform.linux.procnet import (
    counter,
    effective_rp_filter,
    lookup_route,
    parse_igmp,
    parse_igmp6,
    parse_netstat,
    parse_route,
    rp_filter_name,
)

IGMP = (
    "Idx\tDevice    : Count Querier\tGroup    Users Timer\tReporter\n"
    "1\tlo        :     1      V3\n"
    "\t\t\t\t010000E0     1 0:00000000\t\t0\n"
    "3\teth1      :     2      V2\n"
    "\t\t\t\t0303FFEF     1 0:00000000\t\t1\n"
    "\t\t\t\t010000E0     1 0:00000000\t\t0\n"
    "4\teth2      :     0      V3\n"
)

IGMP6 = (
    "1    lo              ff020000000000000000000000000001     1 0000000C 0\n"
    "3    eth1            ff0200000000000000000000000000fb     2 00000004 0\n"
)

NETSTAT = (
    "TcpExt: SyncookiesSent IPReversePathFilter TCPTimeouts\n"
    "TcpExt: 0 7 3\n"
    "IpExt: InNoRoutes InMcastPkts\n"
    "IpExt: 1 42\n"
)

ROUTE = (
    "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
    "eth0\t00000000\t0200C80A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
    "eth0\t0000C80A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
    "eth1\t0001D20A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
    "eth2\t0001D20A\t00000000\t0001\t0\t0\t5\t00FFFFFF\t0\t0\t0\n"
    "eth9\t0000A8C0\t00000000\t0000\t0\t0\t0\t0000FFFF\t0\t0\t0\n"
)


def test_parse_igmp_devices_versions_and_groups() -> None:
    devices = parse_igmp(IGMP, "little")
    assert [(d.interface, d.index, d.querier) for d in devices] == [
        ("lo", 1, "V3"),
        ("eth1", 3, "V2"),
        ("eth2", 4, "V3"),
    ]
    assert [str(m.group) for m in devices[1].groups] == ["239.255.3.3", "224.0.0.1"]
    assert devices[1].groups[0].interface == "eth1"
    assert devices[2].groups == ()


def test_parse_igmp_big_endian_host() -> None:
    text = "Idx\tDevice : Count Querier\n2\teth0 :  1  V3\n\t\t\t\tE0000001     1 0:0\t\t0\n"
    assert str(parse_igmp(text, "big")[0].groups[0].group) == "224.0.0.1"


def test_parse_igmp6() -> None:
    members = parse_igmp6(IGMP6)
    assert [(m.interface, str(m.group), m.users) for m in members] == [
        ("lo", "ff02::1", 1),
        ("eth1", "ff02::fb", 2),
    ]


def test_parse_netstat_and_counter_by_bare_name() -> None:
    counters = parse_netstat(NETSTAT)
    assert counters["TcpExt.IPReversePathFilter"] == 7
    assert counters["IpExt.InMcastPkts"] == 42
    assert counter(counters, "IPReversePathFilter") == 7
    assert counter(counters, "Missing") is None


def test_effective_rp_filter_is_the_larger_value() -> None:
    assert effective_rp_filter(1, 0) == 1
    assert effective_rp_filter(0, 2) == 2
    assert effective_rp_filter(2, 1) == 2
    assert effective_rp_filter(None, None) == 0
    assert rp_filter_name(1) == "strict"


def test_parse_route_skips_down_routes_and_lookup_prefers_longest_then_metric() -> None:
    routes = parse_route(ROUTE, "little")
    assert {r.interface for r in routes} == {"eth0", "eth1", "eth2"}
    default = next(r for r in routes if r.network.prefixlen == 0)
    assert str(default.gateway) == "10.200.0.2"
    ip = ipaddress.IPv4Address
    assert lookup_route(routes, ip("192.168.77.1")).interface == "eth0"  # type: ignore[union-attr]
    assert lookup_route(routes, ip("10.210.1.9")).interface == "eth1"  # type: ignore[union-attr]
    assert lookup_route((), ip("10.0.0.1")) is None
