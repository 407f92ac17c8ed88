"""The relay's pure rules: rate limits, duplicate window, hold-down, pending requests."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcastio._relayrules import (
    BASE,
    SLOTS,
    STEP,
    DuplicateWindow,
    HoldDown,
    PendingTable,
    RateLimiter,
    TokenBucket,
    datagram_key,
    hold_delay,
)

times = st.lists(st.floats(0, 100, allow_nan=False), min_size=1, max_size=200).map(sorted)


@given(
    rate=st.floats(0.5, 1000),
    burst=st.integers(1, 100),
    stamps=times,
)
def test_a_bucket_never_passes_more_than_burst_plus_rate_times_elapsed(
    rate: float, burst: int, stamps: list[float]
) -> None:
    bucket = TokenBucket(rate, burst, stamps[0])
    passed = sum(bucket.take(t) for t in stamps)
    assert passed <= burst + rate * (stamps[-1] - stamps[0]) + 1e-9
    # Nothing is refused while tokens remain: the first ``burst`` always pass.
    assert passed >= min(burst, len(stamps))


def test_a_bucket_refills_at_its_rate_and_ignores_a_clock_stepping_back() -> None:
    bucket = TokenBucket(10, 2, 0.0)
    assert [bucket.take(0) for _ in range(3)] == [True, True, False]
    assert not bucket.take(0.05)
    assert bucket.take(0.1)
    assert not bucket.take(-5.0)
    with pytest.raises(ValueError, match="rate > 0"):
        TokenBucket(0, 1, 0.0)


@given(
    sources=st.lists(st.sampled_from(["10.0.0.1", "10.0.0.2", "10.0.0.3"]), max_size=300),
)
def test_one_source_cannot_use_another_sources_share(sources: list[str]) -> None:
    limiter = RateLimiter(1, 5, 1000, 1000)
    passed: dict[str, int] = {}
    for i, source in enumerate(sources):
        if limiter.check(source, "eth0", i * 0.001) is None:
            passed[source] = passed.get(source, 0) + 1
    for source in set(sources):
        # Within 0.3 s at most the burst of 5 (plus a fraction of one refill).
        assert passed.get(source, 0) == min(5, sources.count(source))


def test_the_link_limit_holds_a_flood_of_spoofed_sources() -> None:
    limiter = RateLimiter(100, 100, 10, 20, max_sources=8)
    verdicts = [limiter.check(f"10.0.{i // 250}.{i % 250}", "eth0", 0.0) for i in range(1000)]
    assert verdicts.count(None) == 20
    assert set(verdicts) == {None, "link"}
    # Memory stays bounded whatever the number of sources.
    assert len(limiter._sources) == 8


@given(
    events=st.lists(st.tuples(st.integers(0, 5), st.floats(0, 0.1, allow_nan=False)), max_size=100),
    window=st.floats(0.01, 2),
)
def test_the_duplicate_window_reports_a_key_again_only_within_the_window(
    events: list[tuple[int, float]], window: float
) -> None:
    dups = DuplicateWindow(window)
    now = 0.0
    first_seen: dict[int, float] = {}
    for key, step in events:
        now += step
        expected = key in first_seen and now < first_seen[key]
        assert dups.seen(bytes([key]), now) == expected
        if not expected:
            first_seen[key] = now + window


def test_the_duplicate_window_is_bounded() -> None:
    dups = DuplicateWindow(10, capacity=4)
    for i in range(10):
        dups.seen(bytes([i]), 0.0)
    assert len(dups) == 4
    assert not dups.seen(bytes([0]), 0.0)


@given(
    holds=st.lists(
        st.tuples(st.integers(0, 9), st.sampled_from("ab"), st.floats(0, 1, allow_nan=False)),
        max_size=50,
    ),
    heard=st.lists(st.tuples(st.integers(0, 9), st.sampled_from("ab")), max_size=20),
)
def test_a_held_forward_leaves_once_unless_its_copy_was_heard_first(
    holds: list[tuple[int, str, float]], heard: list[tuple[int, str]]
) -> None:
    held: HoldDown[int] = HoldDown()
    accepted = {}
    for i, (key, link, deadline) in enumerate(holds):
        if held.hold(bytes([key]), link, deadline, i):
            accepted[(key, link)] = (deadline, i)
        else:
            # One forward per copy and link, whoever asks twice.
            assert (key, link) in accepted
    for key, link in heard:
        if held.heard(bytes([key]), link) is not None:
            del accepted[(key, link)]
    out = held.due(0.5) + held.due(2.0)
    assert sorted(out) == sorted((link, i) for (_, link), (_, i) in accepted.items())
    assert held.next_deadline() is None
    assert len(held) == 0
    # Oldest first.
    deadlines = [holds[i][2] for _, i in out]
    assert [d <= 0.5 for d in deadlines] == sorted([d <= 0.5 for d in deadlines], reverse=True)


def test_hold_down_is_bounded_and_counts_what_it_refused() -> None:
    held: HoldDown[int] = HoldDown(capacity=2)
    assert held.hold(b"1", "a", 1.0, 1)
    assert held.hold(b"2", "a", 1.0, 2)
    assert not held.hold(b"3", "a", 1.0, 3)
    assert held.overflow == 1


@given(st.ip_addresses(), st.ip_addresses())
def test_hold_delays_follow_the_address_slots(a: object, b: object) -> None:
    da, db = hold_delay(str(a)), hold_delay(str(b))
    assert BASE <= da <= BASE + (SLOTS - 1) * STEP
    if int(a) % SLOTS != int(b) % SLOTS:  # type: ignore[call-overload]
        # Two relays in different slots send at least one step apart.
        assert abs(da - db) >= STEP - 1e-12
    assert hold_delay(None, 3) == BASE + 3 * STEP
    with pytest.raises(ValueError, match="slot must be"):
        hold_delay(None, SLOTS)


@settings(max_examples=50)
@given(
    data=st.binary(max_size=64),
    other=st.binary(max_size=64),
)
def test_a_key_names_the_payload_group_and_port(data: bytes, other: bytes) -> None:
    key = datagram_key("224.0.0.251", 5353, data)
    assert key == datagram_key("224.0.0.251", 5353, bytes(data))
    assert key != datagram_key("224.0.0.251", 5354, data)
    assert key != datagram_key("239.255.255.250", 5353, data)
    assert (key == datagram_key("224.0.0.251", 5353, other)) == (data == other)


@given(
    ops=st.lists(st.tuples(st.integers(0, 20), st.floats(0, 2, allow_nan=False)), max_size=100),
    capacity=st.integers(1, 8),
)
def test_the_pending_table_never_exceeds_its_size_and_releases_everything(
    ops: list[tuple[int, float]], capacity: int
) -> None:
    table: PendingTable[int, object] = PendingTable(capacity, 1.0)
    now = 0.0
    live: set[int] = set()
    released: list[object] = []
    made: list[object] = []
    for key, step in ops:
        now += step
        if table.renew(key, now) is None:
            value = object()
            made.append(value)
            released += table.add(key, value, now)
        assert len(table) <= capacity
        live.add(key)
        assert table.get(key, now) is not None
    released += table.pop_all()
    # Every value made is released exactly once: no socket leaks, none closed twice.
    assert sorted(map(id, released)) == sorted(map(id, made))


def test_a_full_pending_table_drops_its_oldest_entry() -> None:
    table: PendingTable[str, str] = PendingTable(2, 5.0)
    assert table.add("a", "A", 0.0) == []
    assert table.add("b", "B", 1.0) == []
    assert table.add("c", "C", 2.0) == ["A"]
    assert table.evicted == 1
    assert table.get("a", 2.0) is None
    assert table.get("c", 2.0) == "C"
    assert table.expire(6.5) == ["B"]
    assert table.next_expiry() == 7.0
    assert table.pop("c") == "C"
    assert table.pop("c") is None
    assert table.next_expiry() is None
