"""A subscription queues replies apart from group traffic: pure, no sockets."""

from __future__ import annotations

import asyncio

from hypothesis import given
from hypothesis import strategies as st

from mcastio import Datagram
from mcastio._stream import DropTally
from mcastio._subscription import Subscription
from tests.conftest import run


def _group(i: int) -> Datagram:
    return Datagram(b"g%d" % i, ("10.0.0.2", 5000), "239.1.1.1", "eth0")


def _reply(i: int) -> Datagram:
    return Datagram(b"r%d" % i, ("10.0.0.3", 5353), None, "eth0")


def test_replies_evict_only_replies() -> None:
    tally = DropTally()
    sub = Subscription(4, tally)
    sub._feed([_group(i) for i in range(3)])
    sub._feed([_reply(i) for i in range(10)])
    assert sub.queued == 7
    assert (sub.dropped, sub.replies_dropped, tally.total) == (6, 6, 6)
    got = run(sub.get_batch())
    assert [d.data for d in got if d.group is not None] == [b"g0", b"g1", b"g2"]
    assert [d.data for d in got if d.group is None] == [b"r6", b"r7", b"r8", b"r9"]
    # Group traffic still drops its own oldest, counted in ``dropped`` alone.
    sub._feed([_group(i) for i in range(6)])
    assert (sub.dropped, sub.replies_dropped) == (8, 6)


def test_the_reader_takes_both_in_turn_and_close_discards_both() -> None:
    sub = Subscription(8)
    sub._feed([_reply(i) for i in range(4)])
    sub._feed([_group(i) for i in range(2)])

    async def take(n: int) -> list[bytes]:
        return [(await sub.__anext__()).data for _ in range(n)]

    assert run(take(6)) == [b"g0", b"r0", b"g1", b"r1", b"r2", b"r3"]
    sub._feed([_group(9)])
    sub._feed([_reply(9)])
    sub.close()
    assert sub.queued == 0
    assert run(sub.get_batch()) == []


@given(
    st.lists(st.tuples(st.booleans(), st.integers(1, 20)), max_size=20),
    st.integers(1, 16),
    st.integers(1, 40),
)
def test_max_items_is_a_fair_bound(feeds: list[tuple[bool, int]], size: int, most: int) -> None:
    sub = Subscription(size)
    for is_reply, n in feeds:
        sub._feed([(_reply if is_reply else _group)(i) for i in range(n)])
    queued = sub.queued
    if not queued:
        return
    groups, replies = len(sub._queue), len(sub._replies)

    async def batch() -> list[Datagram]:
        return await asyncio.wait_for(sub.get_batch(most), 1)

    got = run(batch())
    assert len(got) == min(most, queued)
    assert sub.queued == queued - len(got)
    taken_groups = sum(d.group is not None for d in got)
    # While both wait, neither kind gets more than half (rounded up) of a batch.
    assert taken_groups >= min(groups, len(got) // 2)
    assert len(got) - taken_groups >= min(replies, len(got) // 2)
