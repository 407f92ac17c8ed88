"""Pure parts of listen and ping: the sequence header, loss accounting, tables."""

from __future__ import annotations

import json

import pytest

from mcastio._cli.pingstats import (
    ANSWER,
    MULTICAST,
    PROBE,
    SIZE,
    UNICAST,
    Message,
    PingStats,
    broken,
    decode,
    encode,
    summary_line,
    table,
)
from mcastio._cli.seqheader import HEADER_SIZE, SeqHeader, decode_header, encode_header
from mcastio._cli.tracking import SeqTracker, Tally, progress_line


def test_seq_header_round_trip_and_rejects_other_payloads() -> None:
    data = encode_header(0xDEADBEEF, 2**40 + 3, 1_700_000_000_123_456_789) + b"rest"
    assert len(data) == HEADER_SIZE + 4 == 32
    assert decode_header(data) == SeqHeader(0xDEADBEEF, 2**40 + 3, 1_700_000_000_123_456_789)
    assert decode_header(b"hello") is None
    assert decode_header(b"MCIO" + bytes(30)) is None  # version 0
    assert decode_header(data[: HEADER_SIZE - 1]) is None


def feed(tracker: SeqTracker, seqs: list[int], delay: int = 1_000_000) -> list[str]:
    return [tracker.add(s, delay) for s in seqs]


def test_tracker_counts_loss_duplicates_and_reordering() -> None:
    t = SeqTracker()
    assert feed(t, [0, 1, 3, 2, 2, 5, 6]) == [
        "new", "new", "new", "reordered", "duplicate", "new", "new",
    ]  # fmt: skip
    assert (t.received, t.unique, t.duplicates, t.reordered) == (7, 6, 1, 1)
    assert (t.expected, t.lost) == (7, 1)  # 4 never came
    assert t.loss_percent == pytest.approx(100 / 7)


def test_tracker_starts_counting_at_the_first_number_seen() -> None:
    t = SeqTracker()
    feed(t, [100, 101, 103])
    assert (t.expected, t.lost) == (4, 1)
    feed(t, [99])  # earlier than the first: reordered, and the range grows
    assert (t.expected, t.lost, t.reordered) == (5, 1, 1)


def test_tracker_delay_min_avg_max_ignores_duplicates() -> None:
    t = SeqTracker()
    t.add(0, 1_000_000)
    t.add(1, 3_000_000)
    t.add(1, 50_000_000)
    assert t.delay_ms() == pytest.approx((1.0, 2.0, 3.0))
    assert SeqTracker().delay_ms() is None


def test_tracker_memory_stays_bounded_on_a_long_stream() -> None:
    t = SeqTracker()
    feed(t, list(range(20_000)))
    assert len(t._seen) <= 2 * 4096 + 1
    assert (t.lost, t.duplicates) == (0, 0)
    assert t.add(10, 0) == "reordered"  # far behind the window: cannot tell a duplicate


def test_tally_summary_with_drops_and_streams_fits_80_columns() -> None:
    tally = Tally(interfaces=["eth0", "eth1"])
    tally.add("eth1", "10.0.0.2", 3)
    tally.add("eth1", "10.0.0.3", 1)
    for seq in (0, 1, 3):
        tally.add_seq("eth1", "10.0.0.2", 7, seq, 250_000)
    tally.add_seq("eth1", "fd00:1234:5678:9abc:def0:1234:5678:9abc", 9, 0, 0)
    tally.drops.kernel, tally.drops.queue = 29708, 2
    lines = tally.summary("239.1.1.1:5000").splitlines()
    assert lines[0] == "summary for 239.1.1.1:5000:"
    assert lines[1].split()[:2] == ["eth0", "0"]
    assert lines[2].split()[:5] == ["eth1", "2", "datagrams", "4", "bytes"]
    assert "2 sources" in lines[2]
    assert lines[3].strip() == (
        "dropped on this host: 29708 by the kernel (socket buffer full), 2 in the queue"
    )
    row = next(line for line in lines if "10.0.0.2 " in line)
    assert row.split() == ["eth1", "10.0.0.2", "3", "1", "25.0%", "0", "0", "0.250/0.250/0.250"]
    assert all(len(line) <= 80 for line in lines)
    obj = tally.to_json()
    assert (obj["kernel_dropped"], obj["queue_dropped"], obj["datagrams"]) == (29708, 2, 2)
    stream = obj["streams"][0]  # type: ignore[index]
    assert (stream["lost"], stream["expected"], stream["stream"]) == (1, 4, 7)
    json.dumps(obj)


def test_progress_line() -> None:
    tally = Tally()
    for _ in range(1500):
        tally.add("eth0", "10.0.0.2", 1000)
    line = progress_line(3.0, tally, 500, 500_000, 1.0)
    assert line.split()[:5] == ["3.0s", "1500", "datagrams", "1000/s", "8.00"]
    assert line.endswith("lost 0 drops 0/0")
    assert len(line) <= 80


def test_ping_messages_round_trip_and_reject_noise() -> None:
    probe = Message(PROBE, MULTICAST, 11, 0, 5, 123456789)
    assert len(encode(probe)) == SIZE
    assert decode(encode(probe)) == probe
    answer = probe.answer(22)
    assert answer == Message(ANSWER, MULTICAST, 22, 11, 5, 123456789)
    assert decode(b"MCPG" + bytes(24)) is None  # version 0
    assert decode(encode(probe) + b"x") is None
    assert decode(b"hello") is None


def _answer(stats: PingStats, kind: int, peer_id: int, seq: int, sent: int = 0) -> Message:
    return Message(ANSWER, kind, peer_id, stats.me, seq, sent)


def test_ping_stats_per_peer_interface_and_kind() -> None:
    stats = PingStats(me=1)
    named = stats.add_peer("10.0.1.2", "eth1")  # multicast to it is blocked
    # Round 0 goes out before anyone is heard.
    seq = stats.next_seq()
    stats.sent(MULTICAST, "eth0", seq)
    stats.sent(MULTICAST, "eth1", seq)
    stats.sent(UNICAST, "eth1", seq, named)
    a = stats.heard(2, "10.0.0.2", "eth0")
    b = stats.heard(3, "10.0.1.2", "eth1")
    assert b is named
    assert a is not None
    assert a.first_seq == 1
    for _ in range(4):
        seq = stats.next_seq()
        stats.sent(MULTICAST, "eth0", seq)
        stats.sent(MULTICAST, "eth1", seq)
        stats.sent(UNICAST, "eth0", seq, a)
        stats.sent(UNICAST, "eth1", seq, named)
        for peer, ifname in ((a, "eth0"), (named, "eth1")):
            stats.answered(peer, ifname, _answer(stats, UNICAST, peer.id or 0, seq, 0), 2_000_000)
        stats.answered(a, "eth0", _answer(stats, MULTICAST, 2, seq), 3_000_000)
    stats.answered(a, "eth0", _answer(stats, MULTICAST, 2, 4), 1)  # a duplicate
    stats.answered(a, "eth0", _answer(stats, MULTICAST, 2, 99), 1)  # never sent: ignored
    results = stats.results()
    rows = {(r["peer"], r["interface"], r["kind"]): r for r in results}
    assert rows[("10.0.0.2", "eth0", "multicast")]["sent"] == 4
    assert rows[("10.0.0.2", "eth0", "multicast")]["received"] == 4
    assert rows[("10.0.0.2", "eth0", "multicast")]["duplicates"] == 1
    assert rows[("10.0.0.2", "eth0", "multicast")]["rtt_ms"] == {"min": 3, "avg": 3, "max": 3}
    # The named peer: round 0 came before it was heard, so 4 expected, not 5.
    assert rows[("10.0.1.2", "eth1", "unicast")]["loss_percent"] == 0
    assert rows[("10.0.1.2", "eth1", "unicast")]["sent"] == 4
    assert rows[("10.0.1.2", "eth1", "multicast")]["loss_percent"] == 100
    assert broken(results) == ["multicast to 10.0.1.2 on eth1"]
    assert summary_line(results) == "NO ANSWER: multicast to 10.0.1.2 on eth1"
    text = table(results).splitlines()
    # Peers in the order known: the named one first.
    assert (text[1], text[4]) == ("10.0.1.2", "10.0.0.2")
    assert text[3].split() == ["eth1", "multicast", "4", "0", "100%", "0", "-"]
    assert text[5].split() == ["eth0", "unicast", "4", "4", "0%", "0", "2.000/2.000/2.000"]
    assert all(len(line) <= 80 for line in text)


def test_ping_merges_a_peer_heard_by_link_local_with_the_named_one() -> None:
    stats = PingStats(me=1)
    named = stats.add_peer("fd00:1::2", "eth1")
    heard = stats.heard(5, "fe80::2", "eth1")  # its multicast probe, link-local source
    assert heard is not None
    assert heard is not named
    assert len(stats.peers) == 2
    assert stats.heard(5, "fd00:1::2", "eth1") is named  # its unicast probe
    assert stats.peers == [named]
    assert named.id == 5
    assert stats.heard(1, "10.0.0.1", "eth0") is None  # our own


def test_ping_counts_each_unicast_probe_once_for_a_peer_first_heard_by_link_local() -> None:
    """A probe round between hearing a peer's multicast probe (link-local source) and
    its unicast one probes it twice, once per address: once merged, it is one peer
    that had one probe of each number (6 of 5 seen in the IPv6 lab on a busy machine)."""
    stats = PingStats(me=1)
    named = stats.add_peer("fd00:1::2", "eth1")
    stats.sent(UNICAST, "eth1", stats.next_seq(), named)  # before it runs
    heard = stats.heard(5, "fe80::2", "eth1")
    assert heard is not None
    seq = stats.next_seq()  # a round while it seems two peers
    for peer in (named, heard):
        stats.sent(UNICAST, "eth1", seq, peer)
    assert stats.heard(5, "fd00:1::2", "eth1") is named
    for _ in range(4):
        stats.sent(UNICAST, "eth1", stats.next_seq(), named)
    for n in range(1, 6):
        stats.answered(named, "eth1", _answer(stats, UNICAST, 5, n), 1)
    assert stats.finished(5)
    [row] = [r for r in stats.results(5) if r["kind"] == "unicast"]
    assert (row["sent"], row["received"], row["loss_percent"]) == (5, 5, 0)


def test_ping_reports_a_named_peer_that_never_answered() -> None:
    stats = PingStats(me=1)
    silent = stats.add_peer("10.0.3.2", "eth3")
    for _ in range(3):
        seq = stats.next_seq()
        stats.sent(MULTICAST, "eth3", seq)
        stats.sent(UNICAST, "eth3", seq, silent)
    rows = stats.results()
    assert [(r["kind"], r["sent"], r["received"]) for r in rows] == [
        ("unicast", 3, 0),
        ("multicast", 3, 0),
    ]
    assert table([]).endswith("(no peer answered or was named)")


def test_ping_peer_table_is_bounded() -> None:
    from mcastio._cli.pingstats import MAX_PEERS

    stats = PingStats(me=1)
    for n in range(MAX_PEERS):
        assert stats.heard(100 + n, f"10.0.{n // 250}.{n % 250 + 1}", "eth0") is not None
    assert stats.heard(99999, "10.9.9.9", "eth0") is None
    assert len(stats.peers) == MAX_PEERS
    assert stats.heard(100, "10.0.0.1", "eth0") is not None  # a known one still counts


def test_ping_counts_the_same_number_of_probes_for_a_peer_that_started_late() -> None:
    """Friction 6: SENT showed 4 for -c 5 when the peer started after the first probe."""
    from mcastio._cli.pingstats import MULTICAST, PingStats

    stats = PingStats(1)
    for _ in range(2):  # two probes before the peer runs
        stats.sent(MULTICAST, "eth1", stats.next_seq())
    assert stats.finished(3)  # no peer heard: nothing to wait for
    peer = stats.heard(2, "10.0.0.2", "eth1")
    assert peer is not None
    assert not stats.finished(3)
    for _ in range(3):
        stats.sent(MULTICAST, "eth1", stats.next_seq())
    assert stats.finished(3)
    [row] = [r for r in stats.results(3) if r["kind"] == "multicast"]
    assert row["sent"] == 3
