"""The shared keeper's reports: records packed by MTU, parsed back byte by byte."""

from __future__ import annotations

import ipaddress
import struct
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcastio._igmp import IGMPV3_REPORTS, MLDV2_REPORTS, IPAddress, igmpv3_report, mldv2_report
from mcastio._reportplan import Record, capacity, gather, merge, plan

V4, V6 = ipaddress.IPv4Address, ipaddress.IPv6Address


def checksum(data: bytes) -> int:
    """RFC 1071, written out again here: 0 over a message with a right checksum."""
    if len(data) % 2:
        data += b"\0"
    total = 0
    for i in range(0, len(data), 2):
        total += data[i] << 8 | data[i + 1]
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def parse(payload: bytes, v6: bool) -> list[tuple[int, IPAddress, tuple[IPAddress, ...]]]:
    """(record type, group, sources) of a v3/MLDv2 report: an independent decoder."""
    kind, _, _, _, count = struct.unpack_from("!BBHHH", payload)
    assert kind == (143 if v6 else 0x22)
    if not v6:
        assert checksum(payload) == 0
    size, make = (16, V6) if v6 else (4, V4)
    out: list[tuple[int, IPAddress, tuple[IPAddress, ...]]] = []
    at = 8
    for _ in range(count):
        rtype, aux, n = struct.unpack_from("!BBH", payload, at)
        assert aux == 0
        group = make(payload[at + 4 : at + 4 + size])
        at += 4 + size
        sources = tuple(make(payload[at + i * size : at + (i + 1) * size]) for i in range(n))
        at += n * size
        out.append((rtype, group, sources))
    assert at == len(payload), "no bytes after the last record"
    return out


def v4_groups() -> st.SearchStrategy[ipaddress.IPv4Address]:
    return st.integers(0xE0000100, 0xEFFFFFFF).map(V4)


def v6_groups() -> st.SearchStrategy[ipaddress.IPv6Address]:
    return st.integers(0, 2**112 - 1).map(lambda n: V6((0xFF0E << 112) | n))


def records(v6: bool) -> st.SearchStrategy[list[Record]]:
    groups = v6_groups() if v6 else v4_groups()
    sources = st.integers(1, 2**32 - 1).map(lambda n: V6((0x2001 << 112) | n) if v6 else V4(n))
    return st.lists(
        st.tuples(groups, st.lists(sources, max_size=40, unique=True).map(tuple)),
        max_size=120,
        unique_by=lambda r: r[0],
    )


@settings(max_examples=150, deadline=None)
@given(data=st.data(), v6=st.booleans(), mtu=st.integers(68, 9000))
def test_every_record_goes_once_and_no_report_exceeds_the_mtu(
    data: st.DataObject, v6: bool, mtu: int
) -> None:
    if v6:
        mtu = max(mtu, 1280)
    given_records = data.draw(records(v6))
    merged = merge(given_records)
    reports = plan(merged, v6=v6, version=2 if v6 else 3, mtu=mtu)
    seen_groups: list[object] = []
    seen_pairs: list[tuple[object, object]] = []
    for report in reports:
        header = 40 + 8 if v6 else 24
        assert header + len(report.payload) <= mtu
        assert report.dest == (MLDV2_REPORTS if v6 else IGMPV3_REPORTS)
        parsed = parse(report.payload, v6)
        assert parsed, "no empty report"
        assert [(g, s) for _, g, s in parsed] == list(report.records)
        for rtype, group, sources in parsed:
            # MODE_IS_INCLUDE its sources, or MODE_IS_EXCLUDE {} for any source.
            assert rtype == (1 if sources else 2)
            seen_groups.append(group)
            seen_pairs += [(group, s) for s in sources]
    # Every group in some report; an EXCLUDE group once, an INCLUDE group's every
    # source exactly once (its list may span reports when it does not fit one).
    assert set(seen_groups) == {g for g, _ in given_records}
    excluded = [g for g, s in given_records if not s]
    assert Counter(g for g in seen_groups if g in excluded) == Counter(excluded)
    assert Counter(seen_pairs) == Counter((g, s) for g, ss in given_records for s in ss)
    assert all(n == 1 for n in Counter(seen_pairs).values())
    # As few reports as the records need: only a full one is followed by another.
    room = capacity(v6, mtu)
    smallest = 20 if v6 else 8
    for report in reports[:-1]:
        assert len(report.payload) - 8 > room - smallest - (16 if v6 else 4)


@given(records(False))
def test_old_versions_send_one_report_per_group_to_the_group(given_records: list[Record]) -> None:
    merged = merge(given_records)
    for v6, version in ((False, 2), (False, 1)):
        reports = plan(merged, v6=v6, version=version, mtu=1500)
        assert [r.dest for r in reports] == [g for g, _ in merged]
        for report, (group, _) in zip(reports, merged, strict=True):
            assert len(report.payload) == 8
            assert report.payload[0] == 0x16
            assert V4(report.payload[4:8]) == group
            assert checksum(report.payload) == 0


def test_mldv1_sends_one_report_per_group() -> None:
    groups = [V6("ff15::1"), V6("ff15::2")]
    reports = plan(merge((g, ()) for g in groups), v6=True, version=1, mtu=1500)
    assert [r.dest for r in reports] == groups
    assert [(r.payload[0], V6(r.payload[8:24])) for r in reports] == [(131, g) for g in groups]


def test_merge_is_the_hosts_combined_filter() -> None:
    g1, g2, s1, s2 = V4("232.1.1.1"), V4("239.1.1.1"), V4("10.0.0.1"), V4("10.0.0.2")
    # Two endpoints on g1 with different sources: INCLUDE their union; any-source wins.
    assert merge([(g2, ()), (g1, (s2,)), (g1, (s1, s2))]) == ((g1, (s1, s2)), (g2, ()))
    assert merge([(g1, (s1,)), (g1, ()), (g1, (s2,))]) == ((g1, ()),)
    assert merge([]) == ()


def test_three_groups_make_one_report_of_three_records_with_a_right_checksum() -> None:
    groups = [V4("239.255.18.1"), V4("239.255.18.2"), V4("232.1.1.1")]
    src = V4("10.1.1.1")
    [report] = plan(
        merge([(groups[0], ()), (groups[1], ()), (groups[2], (src,))]),
        v6=False,
        version=3,
        mtu=1500,
    )
    assert len(report.payload) == 8 + 8 + 8 + 12
    assert checksum(report.payload) == 0
    assert parse(report.payload, False) == [
        (1, groups[2], (src,)),
        (2, groups[0], ()),
        (2, groups[1], ()),
    ]


def test_the_builders_match_the_one_group_reports_the_keeper_sent_before() -> None:
    g = V4("239.1.2.3")
    # The single-record IGMPv3 report, byte for byte as RFC 3376 §4.2 lays it out.
    expected = bytearray(b"\x22\x00\x00\x00\x00\x00\x00\x01\x02\x00\x00\x00" + g.packed)
    expected[2:4] = struct.pack("!H", checksum(bytes(expected)))
    assert igmpv3_report([(g, ())]) == bytes(expected)
    g6 = V6("ff15::9")
    assert (
        mldv2_report([(g6, ())]) == b"\x8f\x00\x00\x00\x00\x00\x00\x01\x02\x00\x00\x00" + g6.packed
    )


def test_an_mtu_too_small_for_any_record_is_refused() -> None:
    with pytest.raises(ValueError, match="MTU of 40"):
        plan(((V4("239.1.1.1"), ()),), v6=False, version=3, mtu=40)
    # 68 bytes (the IPv4 minimum) holds one record with up to 7 sources.
    sources = tuple(V4(f"10.0.0.{i}") for i in range(1, 16))
    reports = plan(((V4("232.1.1.1"), sources),), v6=False, version=3, mtu=68)
    assert [len(r.records[0][1]) for r in reports] == [7, 7, 1]


waits = st.lists(
    st.tuples(st.none() | st.floats(-10, 10, allow_nan=False), st.floats(0, 5, allow_nan=False)),
    max_size=20,
)


@given(waits, st.floats(0, 1))
def test_a_refresh_comes_only_when_one_is_due_and_takes_every_one_in_its_window(
    given_waits: list[tuple[float | None, float]], lead: float
) -> None:
    chosen = gather(given_waits, lead)
    due = [i for i, (w, win) in enumerate(given_waits) if w is not None and w <= lead * win]
    if not due:
        assert chosen == ()
        return
    assert set(due) <= set(chosen)
    near = [i for i, (w, win) in enumerate(given_waits) if w is not None and w <= (1 + lead) * win]
    assert list(chosen) == near


def test_a_member_phased_past_the_window_joins_the_next_refresh() -> None:
    # Interval 1 s, window 0.5 s. At t = 0 two are due and the third only in 0.6 s:
    # the refresh takes the two. At t = 0.6 the third is due and the two are 0.4 s
    # from due: one refresh takes all three, and from then on they fall due together.
    assert gather([(0.0, 0.5), (0.2, 0.5), (0.6, 0.5)]) == (0, 1)
    assert gather([(0.4, 0.5), (0.4, 0.5), (0.0, 0.5)]) == (0, 1, 2)
    assert gather([(None, 1.0), (0.1, 1.0)]) == ()
    # With a lead, a member counts as due that much of its window early.
    assert gather([(0.1, 0.5), (0.6, 0.5)], lead=0.2) == (0, 1)
    assert gather([(0.1, 0.5), (0.61, 0.5)], lead=0.2) == (0,)
    assert gather([(0.11, 0.5), (0.4, 0.5)], lead=0.2) == ()
