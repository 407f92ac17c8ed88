"""Doctor analysis on fixed host readings: each finding, and when it must not fire."""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
import struct

from mcastio._cli.doctor import FINDING_IDS, Finding, HostState, diagnose
from mcastio._igmp import QuerySeen, parse_igmp_query, parse_mld_query, parse_query
from mcastio._model import Interface, parse_group
from mcastio._platform.linux.procnet import IgmpDevice, Membership, parse_route

V4 = ipaddress.IPv4Address

LO = Interface(
    "lo", 1, loopback=True, multicast=False, ipv4=(ipaddress.IPv4Interface("127.0.0.1/8"),)
)
ETH0 = Interface("eth0", 2, ipv4=(ipaddress.IPv4Interface("10.200.0.1/24"),), is_default=True)
ETH1 = Interface("eth1", 3, ipv4=(ipaddress.IPv4Interface("10.210.1.1/24"),))
ROUTES = parse_route(
    "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n"
    "eth0\t00000000\t0200C80A\t0003\t0\t0\t0\t00000000\n"
    "eth0\t0000C80A\t00000000\t0001\t0\t0\t0\t00FFFFFF\n"
    "eth1\t0001D20A\t00000000\t0001\t0\t0\t0\t00FFFFFF\n",
    "little",
)
BASE = HostState(
    interfaces=(LO, ETH0, ETH1),
    igmp=(IgmpDevice("eth0", 2, "V3", ()), IgmpDevice("eth1", 3, "V3", ())),
    rp_filter={"all": 0, "eth0": 0, "eth1": 0},
    force_igmp_version={"all": 0},
    igmp_max_memberships=20,
    routes=ROUTES,
    rpf_drops_before=10,
    rpf_drops_after=10,
    queries=(),
    duration=5.0,
)


def query(source: str, iface: str = "eth1", version: int = 2) -> QuerySeen:
    return QuerySeen(iface, V4(source), version, V4("0.0.0.0"))


def by_id(findings: tuple[Finding, ...], fid: str) -> list[Finding]:
    assert fid in FINDING_IDS
    return [f for f in findings if f.id == fid]


def ip_packet(igmp: bytes, source: str = "192.168.77.1", proto: int = 2) -> bytes:
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(igmp), 0, 0, 1, proto, 0,
        socket.inet_aton(source), socket.inet_aton("224.0.0.1"),
    )  # fmt: skip
    return header + igmp


def test_parse_igmp_query_versions_and_non_queries() -> None:
    v2 = parse_igmp_query("eth1", ip_packet(bytes([0x11, 100, 0, 0, 0, 0, 0, 0])))
    assert v2 == QuerySeen("eth1", V4("192.168.77.1"), 2, V4("0.0.0.0"))
    v1 = parse_igmp_query("eth1", ip_packet(bytes([0x11, 0, 0, 0, 0, 0, 0, 0])))
    assert v1 is not None
    assert v1.version == 1
    v3 = parse_igmp_query("eth1", ip_packet(bytes([0x11, 100, 0, 0, 239, 1, 2, 3, 0, 0, 0, 0])))
    assert v3 is not None
    assert v3.version == 3
    assert v3.group == V4("239.1.2.3")
    assert parse_igmp_query("eth1", ip_packet(bytes([0x16, 0, 0, 0, 239, 1, 2, 3]))) is None
    assert parse_igmp_query("eth1", ip_packet(bytes(8), proto=17)) is None
    assert parse_igmp_query("eth1", b"\x45\x00") is None


def test_implausible_querier_with_strict_rp_filter_is_an_error_naming_both() -> None:
    state = dataclasses.replace(
        BASE,
        rp_filter={"all": 1, "eth0": 0, "eth1": 0},
        queries=(query("192.168.77.1"), query("192.168.77.1")),
        rpf_drops_after=12,
    )
    findings = diagnose(state)
    [bad] = by_id(findings, "querier-implausible-address")
    assert bad.severity == "error"
    assert bad.interface == "eth1"
    assert "192.168.77.1" in bad.message
    assert "rp_filter is strict" in bad.message
    assert any("via eth0" in e for e in bad.evidence)
    assert any("rose by 2" in e for e in bad.evidence)
    rp = {f.interface: f for f in by_id(findings, "rp-filter-strict")}
    assert rp["eth1"].severity == "error"
    # eth0 is strict too, but nothing shows that it dropped anything.
    assert rp["eth0"].severity == "warning"
    assert by_id(findings, "no-querier")[0].interface == "eth0"


def test_implausible_querier_without_rp_filter_is_only_a_warning() -> None:
    state = dataclasses.replace(BASE, queries=(query("192.168.77.1"),))
    [bad] = by_id(diagnose(state), "querier-implausible-address")
    assert bad.severity == "warning"
    assert "lets them through" in bad.message
    assert by_id(diagnose(state), "rp-filter-strict") == []


def test_loose_rp_filter_drops_only_unroutable_sources() -> None:
    loose = dataclasses.replace(BASE, rp_filter={"all": 2}, queries=(query("192.168.77.1"),))
    [routable] = by_id(diagnose(loose), "querier-implausible-address")
    assert routable.severity == "warning"
    no_default = dataclasses.replace(loose, routes=tuple(r for r in ROUTES if r.network.prefixlen))
    [unroutable] = by_id(diagnose(no_default), "querier-implausible-address")
    assert unroutable.severity == "error"
    assert "no route" in unroutable.message


def test_plausible_and_zero_source_queriers_are_fine() -> None:
    state = dataclasses.replace(
        BASE,
        rp_filter={"all": 1},
        queries=(query("10.210.1.254"), query("0.0.0.0", "eth0")),
    )
    findings = diagnose(state)
    assert by_id(findings, "querier-implausible-address") == []
    assert by_id(findings, "no-querier") == []
    assert {f.interface for f in by_id(findings, "querier-seen")} == {"eth0", "eth1"}
    assert all(f.severity == "warning" for f in by_id(findings, "rp-filter-strict"))


def test_no_querier_severity_depends_on_the_window() -> None:
    short = by_id(diagnose(BASE), "no-querier")
    assert [(f.interface, f.severity) for f in short] == [("eth0", "info"), ("eth1", "info")]
    assert "few minutes and then stops" in short[0].message
    long = by_id(diagnose(dataclasses.replace(BASE, duration=130.0)), "no-querier")
    assert {f.severity for f in long} == {"warning"}


def test_no_querier_says_why_the_check_was_skipped() -> None:
    state = dataclasses.replace(BASE, queries=None, capture_skipped="needs CAP_NET_RAW")
    [skipped] = by_id(diagnose(state), "no-querier")
    assert skipped.severity == "info"
    assert "Skipped the querier check" in skipped.message
    assert "needs CAP_NET_RAW" in skipped.message


def test_multi_homed_names_the_default_route_interface() -> None:
    [f] = by_id(diagnose(BASE), "multi-homed-default-route")
    assert f.interface == "eth0"
    assert "eth0 only" in f.message
    assert "eth1" in f.message
    single = dataclasses.replace(BASE, interfaces=(LO, ETH0))
    assert by_id(diagnose(single), "multi-homed-default-route") == []
    assert by_id(diagnose(single, None), "rp-filter-strict") == []


def test_membership_limit_compares_the_sysctl_with_the_interfaces_needed() -> None:
    group = parse_group("239.1.1.1")
    [ok] = by_id(diagnose(BASE, group), "membership-limit")
    assert ok.severity == "info"
    [tight] = by_id(
        diagnose(dataclasses.replace(BASE, igmp_max_memberships=1), group), "membership-limit"
    )
    assert tight.severity == "warning"
    assert "ENOBUFS" in tight.message
    assert "2 memberships" in tight.message
    assert by_id(diagnose(BASE, parse_group("ff05::1")), "membership-limit") == []


def test_igmp_version_fallback_and_ssm() -> None:
    fell_back = dataclasses.replace(
        BASE, igmp=(IgmpDevice("eth0", 2, "V3", ()), IgmpDevice("eth1", 3, "V2", ()))
    )
    findings = by_id(diagnose(fell_back), "igmp-version")
    eth1 = next(f for f in findings if f.interface == "eth1")
    assert eth1.severity == "info"
    assert "fell back" in eth1.message
    ssm = by_id(diagnose(fell_back, parse_group("232.1.1.1")), "igmp-version")
    assert next(f for f in ssm if f.interface == "eth1").severity == "error"
    forced = dataclasses.replace(BASE, force_igmp_version={"all": 0, "eth0": 2})
    eth0 = next(f for f in by_id(diagnose(forced), "igmp-version") if f.interface == "eth0")
    assert "force_igmp_version=2" in eth0.message
    plain = by_id(diagnose(BASE), "igmp-version")
    assert [f.interface for f in plain] == [None]


def test_group_scope_and_mac_collisions_in_use() -> None:
    [scope] = by_id(diagnose(BASE, parse_group("239.255.0.1")), "group-scope")
    assert "01:00:5e:7f:00:01" in scope.message
    assert "224.127.0.1" in scope.evidence[1]
    busy = dataclasses.replace(
        BASE,
        igmp=(IgmpDevice("eth1", 3, "V3", (Membership("eth1", 3, V4("224.127.0.1"), 1),)),),
    )
    findings = by_id(diagnose(busy, parse_group("239.255.0.1")), "group-scope")
    [collision] = [f for f in findings if f.severity == "warning"]
    assert collision.interface == "eth1"
    assert "224.127.0.1" in collision.message
    assert "239.255.0.1" in collision.message
    assert by_id(diagnose(busy), "group-scope") == []


def test_finding_json_has_the_fixed_keys() -> None:
    f = Finding("no-querier", "info", "m", "eth1", ("e",), "fix it")
    assert f.to_json() == {
        "id": "no-querier",
        "severity": "info",
        "interface": "eth1",
        "message": "m",
        "evidence": ["e"],
        "fix": "fix it",
    }


def ip6_packet(icmp: bytes, source: str = "fe80::1", hopopts: bool = True) -> bytes:
    ext = bytes([58, 0, 5, 2, 0, 0, 1, 0]) if hopopts else b""
    header = struct.pack(
        "!IHBB16s16s", 6 << 28, len(ext) + len(icmp), 0 if hopopts else 58, 1,
        socket.inet_pton(socket.AF_INET6, source), socket.inet_pton(socket.AF_INET6, "ff02::1"),
    )  # fmt: skip
    return header + ext + icmp


def test_parse_mld_query_versions_behind_hop_by_hop() -> None:
    v1 = parse_query("eth1", ip6_packet(bytes([130, 0, 0, 0, 0, 200, 0, 0]) + bytes(16)))
    assert v1 == QuerySeen("eth1", ipaddress.IPv6Address("fe80::1"), 1, ipaddress.IPv6Address("::"))
    assert v1.protocol == "MLD"
    v2 = parse_query(
        "eth1", ip6_packet(bytes([130, 0, 0, 0, 0, 200, 0, 0]) + bytes(20), hopopts=False)
    )
    assert v2 is not None
    assert v2.version == 2
    report = ip6_packet(bytes([131, 0, 0, 0, 0, 0, 0, 0]) + bytes(16))
    assert parse_query("eth1", report) is None
    assert parse_mld_query("eth1", ip_packet(bytes(8))) is None
    assert query("10.0.0.1").protocol == "IGMP"


def test_mld_querier_must_use_a_link_local_source() -> None:
    eth1 = dataclasses.replace(
        ETH1, ipv6=(ipaddress.IPv6Interface("fd00:1::1/64"), ipaddress.IPv6Interface("fe80::1/64"))
    )
    group = parse_group("ff05::1:3")
    v6 = ipaddress.IPv6Address

    def mld(source: str) -> QuerySeen:
        return QuerySeen("eth1", v6(source), 1, v6("::"))

    state = dataclasses.replace(BASE, interfaces=(LO, ETH0, eth1), queries=(mld("fd00:1::2"),))
    [bad] = by_id(diagnose(state, group), "querier-implausible-address")
    assert bad.severity == "error"
    assert "fd00:1::2" in bad.message
    assert "link-local" in bad.message
    good = dataclasses.replace(state, queries=(mld("fe80::2"),))
    findings = diagnose(good, group)
    assert by_id(findings, "querier-implausible-address") == []
    assert [f.interface for f in by_id(findings, "querier-seen")] == ["eth1"]
    # IPv4 interfaces still get their IGMP check; MLD only for an IPv6 group.
    assert [f.interface for f in by_id(findings, "no-querier")] == ["eth0", "eth1"]
    assert "IGMP" in by_id(findings, "no-querier")[0].message
    assert by_id(diagnose(good), "querier-seen") == []


def test_no_querier_and_rp_filter_fixes_point_to_the_keeper_and_the_querier() -> None:
    nones = by_id(diagnose(BASE), "no-querier")
    assert [f.interface for f in nones] == ["eth0", "eth1"]
    assert all("mcastio querier" in f.fix and "keepalive" in f.fix for f in nones)
    strict = dataclasses.replace(BASE, rp_filter={"all": 1, "eth0": 0, "eth1": 0})
    assert all("mcastio querier" in f.fix for f in by_id(diagnose(strict), "rp-filter-strict"))
    bad = dataclasses.replace(strict, queries=(query("192.168.77.1"),))
    [implausible] = by_id(diagnose(bad), "querier-implausible-address")
    assert "keepalive" in implausible.fix


def test_doctor_says_when_the_keeper_or_our_querier_runs() -> None:
    assert by_id(diagnose(BASE), "keeper-active") == []
    assert by_id(diagnose(BASE), "querier-active") == []
    state = dataclasses.replace(BASE, helpers=(("keepalive", "239.255.0.1"), ("querier", "eth1")))
    findings = diagnose(state)
    [keeper] = by_id(findings, "keeper-active")
    assert "239.255.0.1" in keeper.message
    [ours] = by_id(findings, "querier-active")
    assert "eth1" in ours.message
    # One loop's beacon names what fits and counts the rest; two loops add up.
    many = (("keepalive", "239.1.0.0,239.1.0.1+98"), ("keepalive", "239.2.0.0+1"))
    [keeper] = by_id(diagnose(dataclasses.replace(BASE, helpers=many)), "keeper-active")
    assert "239.1.0.0, 239.1.0.1, 239.2.0.0 and 99 more" in keeper.message
    # Our own queries leave the host, so the capture never sees them: no false alarm
    # on eth1, but still one on eth0, which our querier does not cover.
    assert [f.interface for f in by_id(findings, "no-querier")] == ["eth0"]


def test_doctor_text_says_a_shared_fix_once_and_pins_the_drop_counter() -> None:
    """Friction 9: 75 lines on a healthy 3-link host, the same fix per interface, and
    the host-wide rp_filter drop counter blamed on every interface."""
    from mcastio._cli.doctortext import findings_text

    eth2 = Interface("eth2", 4, ipv4=(ipaddress.IPv4Interface("10.220.1.1/24"),))
    state = dataclasses.replace(
        BASE,
        interfaces=(LO, ETH0, ETH1, eth2),
        rp_filter={"all": 1, "eth0": 0, "eth1": 0, "eth2": 0},
        queries=(query("192.168.77.1"),),
        rpf_drops_after=12,
    )
    findings = diagnose(state)
    rp = {f.interface: f for f in by_id(findings, "rp-filter-strict")}
    assert set(rp) == {"eth0", "eth1", "eth2"}
    # Only eth1 had a query dropped: only eth1 carries the counter.
    assert [n for n, f in rp.items() if any("IPReversePathFilter" in e for e in f.evidence)] == [
        "eth1"
    ]
    assert "counter" not in rp["eth0"].message
    text = "\n\n".join(findings_text(findings))
    assert all(len(line) <= 80 for line in text.splitlines())
    # eth0 and eth2 share one block: one head, one fix.
    assert "WARNING rp-filter-strict [eth0, eth2]" in text
    assert "INFO    no-querier [eth0, eth2]" in text
    assert text.count("net.ipv4.conf.IF.rp_filter=2") == 1
    # The remedy several findings share is said once, at the end.
    assert text.count("keeps its own memberships alive") == 1
    # The old text: one block per finding.
    from mcastio._cli.doctortext import finding_text

    old = "\n\n".join(finding_text(f) for f in findings)
    assert len(text.splitlines()) < len(old.splitlines()) - 10
