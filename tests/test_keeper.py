"""The keeper's and the querier's pure parts: decisions, packets, beacons, election."""

from __future__ import annotations

import ipaddress
import math
import socket
import struct

import pytest

from mcastio._election import Election, Timing, heard, tick, validate_interval, wake_at
from mcastio._igmp import (
    encode_interval,
    igmp_query,
    igmp_report,
    mld_query,
    mld_report,
    parse_mld_message,
    parse_query,
)
from mcastio._keeper import (
    Track,
    beacon_name,
    choose_mechanism,
    due,
    heard_query,
    next_due,
    parse_beacons,
    refreshed,
    state_of,
)
from mcastio._options import DEFAULT_KEEPALIVE, validate_keepalive

V4, V6 = ipaddress.IPv4Address, ipaddress.IPv6Address


def test_keepalive_values() -> None:
    assert validate_keepalive(True) == DEFAULT_KEEPALIVE == 60.0
    assert validate_keepalive(False) is None
    assert validate_keepalive(2) == 2.0
    assert validate_keepalive(0.25) == 0.25
    for bad in (0, -1, math.nan, math.inf, "60", [60]):
        with pytest.raises(ValueError, match="keepalive"):
            validate_keepalive(bad)  # type: ignore[arg-type]


def test_mechanism_follows_privilege_and_the_hosts_version() -> None:
    assert choose_mechanism(True, 2, False) == ("report", "")
    assert choose_mechanism(True, 1, True) == ("report", "")
    assert choose_mechanism(False, 3, False) == ("source-filter", "")
    assert choose_mechanism(False, 2, True) == ("source-filter", "")
    mech, why = choose_mechanism(False, 2, False)
    assert mech == "none"
    assert "IGMPv2" in why
    assert "CAP_NET_RAW" in why
    assert "mcastio querier" in why
    assert choose_mechanism(False, 1, True)[0] == "none"


def test_refresh_is_due_when_the_host_has_not_reported_for_an_interval() -> None:
    t = Track("eth1", 3, joined=100.0)
    assert not due(t, 159.9, 60)
    assert due(t, 160.0, 60)
    assert next_due([t], 60) == 160.0
    # An accepted query (the host answers it) pushes the refresh back.
    t = heard_query(t, 150.0, "10.0.0.254")
    assert not due(t, 160.0, 60)
    assert next_due([t], 60) == 210.0
    t3 = refreshed(Track("eth1", 3, joined=100.0), 160.0)
    assert not due(t3, 219.0, 60)
    assert due(t3, 220.0, 60)
    assert t3.refreshes == 1
    assert refreshed(t3, 220.0, counted=False).refreshes == 1
    assert next_due([t, t3], 60) == 210.0
    assert next_due([], 60) is None


def test_state_tells_an_answered_querier_from_refreshing() -> None:
    t = Track("eth1", 3, joined=0.0)
    assert state_of(t, 1.0, 60, "report", "", True).role == "watching"
    answered = heard_query(t, 10.0, "10.0.0.254")
    s = state_of(answered, 20.0, 60, "report", "", True)
    assert (s.role, s.querier) == ("querier", "10.0.0.254")
    assert s.query_age == pytest.approx(10.0)
    # The querier went quiet an interval ago and the keeper took over.
    quiet = refreshed(answered, 70.0)
    s = state_of(quiet, 71.0, 60, "report", "", True)
    assert (s.role, s.refreshes) == ("refreshing", 1)
    assert state_of(t, 1.0, 60, "none", "why", False).role == "unable"
    assert state_of(t, 1.0, 60, "none", "why", False).reason == "why"


def _ip4(payload: bytes, src: str = "10.0.0.1", dst: str = "224.0.0.22") -> bytes:
    # fmt: off
    return (
        struct.pack(
            "!BBHHHBBH4s4s",
            0x45,
            0,
            20 + len(payload),
            0,
            0,
            1,
            2,
            0,
            socket.inet_aton(src),
            socket.inet_aton(dst),
        )
        + payload
    )
    # fmt: on


def _ip6(payload: bytes, src: str = "fe80::1") -> bytes:
    hbh = bytes((58, 0, 5, 2, 0, 0, 1, 0))
    header = struct.pack("!IHBB16s16s", 6 << 28, len(hbh) + len(payload), 0, 1,
                         V6(src).packed, V6("ff02::16").packed)  # fmt: skip
    return header + hbh + payload


def _checksum_ok(message: bytes) -> bool:
    total: int = sum(struct.unpack(f"!{len(message) // 2}H", message))
    while total >> 16:
        total = (total >> 16) + (total & 0xFFFF)
    return total == 0xFFFF


def test_reports_say_is_exclude_or_is_include() -> None:
    v3, dest = igmp_report(3, V4("239.1.2.3"))
    assert dest == V4("224.0.0.22")
    assert _checksum_ok(v3)
    # Type 0x22, one record: MODE_IS_EXCLUDE (2), no sources, the group.
    assert v3 == bytes([0x22, 0]) + v3[2:4] + bytes([0, 0, 0, 1, 2, 0, 0, 0]) + bytes(
        [239, 1, 2, 3]
    )
    ssm, _ = igmp_report(3, V4("232.1.1.1"), [V4("10.0.0.2")])
    assert ssm[8:12] == bytes([1, 0, 0, 1])  # MODE_IS_INCLUDE, one source
    assert ssm[-4:] == V4("10.0.0.2").packed
    v2, dest2 = igmp_report(2, V4("239.1.2.3"))
    assert dest2 == V4("239.1.2.3")
    assert v2[0] == 0x16
    assert v2[4:] == V4("239.1.2.3").packed
    assert _checksum_ok(v2)
    mld2, dest6 = mld_report(2, V6("ff15::1"), [V6("fd00::2")])
    assert dest6 == V6("ff02::16")
    assert mld2[0] == 143
    assert mld2[6:8] == b"\0\1"
    assert mld2[8:12] == bytes([1, 0, 0, 1])
    assert mld2[12:28] == V6("ff15::1").packed
    assert mld2[28:] == V6("fd00::2").packed
    mld1, dest61 = mld_report(1, V6("ff15::1"))
    assert dest61 == V6("ff15::1")
    assert mld1[0] == 131
    assert mld1[8:] == V6("ff15::1").packed


def test_queries_carry_the_interval_and_parse_back() -> None:
    assert encode_interval(125) == 125
    assert encode_interval(100) == 100
    assert encode_interval(128) == 0x80  # (0 | 0x10) << 3
    assert encode_interval(31744) == 0xFF
    q3 = igmp_query(3, 125, 10)
    assert _checksum_ok(q3)
    assert len(q3) == 12
    assert q3[1] == 100
    assert q3[8] == 2
    assert q3[9] == 125
    seen = parse_query("eth1", _ip4(q3, dst="224.0.0.1"))
    assert seen is not None
    assert seen.version == 3
    assert seen.general
    q2 = igmp_query(2, 0.3, 0.15)
    assert len(q2) == 8
    assert q2[1] == 2
    assert parse_query("eth1", _ip4(q2)).version == 2  # type: ignore[union-attr]
    m2 = mld_query(2, 125, 10)
    assert len(m2) == 28
    assert struct.unpack_from("!H", m2, 4)[0] == 10000
    assert parse_query("eth1", _ip6(m2)).version == 2  # type: ignore[union-attr]
    m1 = mld_query(1, 0.3, 0.15)
    assert len(m1) == 24
    assert struct.unpack_from("!H", m1, 4)[0] == 150
    assert parse_query("eth1", _ip6(m1)).version == 1  # type: ignore[union-attr]
    # As a raw ICMPv6 socket reads it: the bare message, the source from recvmsg.
    bare = parse_mld_message("eth1", V6("fe80::1"), m2)
    assert bare is not None
    assert (bare.source, bare.version, bare.general) == (V6("fe80::1"), 2, True)
    assert parse_mld_message("eth1", V6("fe80::1"), bytes([131]) + m2[1:]) is None


def test_beacons_are_found_in_proc_net_unix() -> None:
    name = beacon_name("keepalive", "ff15::1", 42, 7)
    querier = beacon_name("querier", "eth1,eth2", 42, 8)
    querier = beacon_name("querier", "eth1,eth2", 42, 8)
    text = (
        "Num       RefCount Protocol Flags    Type St Inode Path\n"
        f"0000000000000000: 00000002 00000000 00000000 0002 01 123 @{name}\n"
        f"0000000000000000: 00000002 00000000 00000000 0002 01 124 @{querier}\n"
        "0000000000000000: 00000002 00000000 00010000 0001 01 125 /run/systemd/notify\n"
        "0000000000000000: 00000002 00000000 00000000 0002 01 126 @mcastio/other/x/1.1\n"
    )
    assert parse_beacons(text) == (("keepalive", "ff15::1"), ("querier", "eth1,eth2"))


def test_query_interval_limits() -> None:
    assert validate_interval(125) == 125.0
    for bad in (0, 0.05, 40000, math.nan, True, "1"):
        with pytest.raises(ValueError, match="interval"):
            validate_interval(bad)  # type: ignore[arg-type]


def test_election_lower_address_wins_and_the_other_may_resume() -> None:
    timing = Timing.for_interval(125)
    assert timing.response == 10
    assert timing.other_present == 255.0  # 2 x 125 + 10 / 2, RFC 3376 §8.5
    e = Election(V4("10.0.0.5"))
    e, send = tick(e, 0.0, timing)
    assert send
    assert e.querier
    assert e.sent == 1
    # Startup: the next query after a quarter interval, then at the full interval.
    assert wake_at(e) == 31.25
    e, send = tick(e, 31.25, timing)
    assert send
    assert wake_at(e) == 62.5
    e, send = tick(e, 62.5, timing)
    assert send
    assert wake_at(e) == 187.5
    assert heard(e, V4("10.0.0.9"), 70.0, timing) == e  # higher: ignored
    assert heard(e, V6("fe80::1"), 70.0, timing) == e  # other family: ignored
    e = heard(e, V4("10.0.0.1"), 70.0, timing)
    assert not e.querier
    assert e.other == V4("10.0.0.1")
    assert wake_at(e) == 325.0
    e, send = tick(e, 200.0, timing)
    assert not send
    assert not e.querier
    e = heard(e, V4("10.0.0.1"), 200.0, timing)  # it still queries: wait on
    e, send = tick(e, 325.0, timing)
    assert not send
    assert not e.querier
    e, send = tick(e, 455.0, timing)
    assert send
    assert e.querier
    assert e.other is None
    assert e.sent == 4


def test_election_compares_ipv6_link_local_addresses_numerically() -> None:
    timing = Timing.for_interval(1)
    e = Election(V6("fe80::20"))
    e = heard(e, V6("fe80::3"), 0.0, timing)
    assert not e.querier
    assert heard(Election(V6("fe80::3")), V6("fe80::20"), 0.0, timing).querier


def test_every_endpoint_entry_takes_keepalive() -> None:
    from mcastio import DualStackEndpoint, MulticastEndpoint

    assert MulticastEndpoint("239.255.0.1", 5000).keepalive == DEFAULT_KEEPALIVE
    assert MulticastEndpoint("239.255.0.1", 5000, keepalive=5).keepalive == 5.0
    assert MulticastEndpoint("ff02::1:3", 5000, keepalive=False).keepalive is None
    assert MulticastEndpoint("239.255.0.1", 5000, keepalive=False).keepalive_state == ()
    with pytest.raises(ValueError, match="keepalive"):
        MulticastEndpoint("239.255.0.1", 5000, keepalive=-1)
    dual = DualStackEndpoint("224.0.0.251", "ff02::fb", 5353, keepalive=9)
    assert (dual._v4.keepalive, dual._v6.keepalive) == (9.0, 9.0)
