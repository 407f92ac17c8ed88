"""Work done in turns lets a timer that fell due run before the next slice.

No sockets: tasks spin through slices of :mod:`mcastio._turns` (order, not
timing, is checked, so a busy machine cannot fail it).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from mcastio import _turns

SLICES = 12


async def _spin(log: list[tuple[str, float]], name: str) -> None:
    loop = asyncio.get_running_loop()
    for _ in range(SLICES):
        await _turns.take_turn(loop)
        log.append(("slice", time.monotonic()))
        while not _turns.turn_due(loop):
            pass


async def _probe(log: list[tuple[str, float]], stop: asyncio.Event) -> None:
    while not stop.is_set():
        due = time.monotonic() + 0.0005
        await asyncio.sleep(0.0005)
        log.append(("timer", due))


@pytest.mark.parametrize("workers", [1, 3])
def test_a_due_timer_waits_for_at_most_the_slice_under_way(
    monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    monkeypatch.setattr(_turns, "SLICE", 0.002)
    log: list[tuple[str, float]] = []

    async def main() -> None:
        stop = asyncio.Event()
        probe = asyncio.create_task(_probe(log, stop))
        await asyncio.gather(*(_spin(log, f"w{n}") for n in range(workers)))
        stop.set()
        await probe

    asyncio.run(main())
    slices = [t for what, t in log if what == "slice"]
    assert len(slices) == workers * SLICES
    wakes = [(i, due) for i, (what, due) in enumerate(log) if what == "timer"]
    assert wakes
    # Slices begun after the timer fell due and before its task ran: at most the
    # one whose pass had already started when it fell due.
    late = [sum(1 for what, t in log[:i] if what == "slice" and t > due) for i, due in wakes]
    assert max(late) <= 1, late


def test_small_pieces_share_a_slice_without_gaps(monkeypatch: pytest.MonkeyPatch) -> None:
    """Work that leaves its slice unused lets the next waiter go on in the next pass:
    a hundred gathered starts that each do a little are not spread over three
    hundred passes."""
    passes = 0
    resumed: list[int] = []

    def count() -> None:
        nonlocal passes
        passes += 1
        if len(resumed) < 50:
            asyncio.get_running_loop().call_soon(count)

    async def piece() -> None:
        await _turns.take_turn(asyncio.get_running_loop())
        resumed.append(passes)

    async def main() -> None:
        monkeypatch.setattr(_turns, "SLICE", 0.0)  # every piece queues...
        tasks = [asyncio.create_task(piece()) for _ in range(50)]
        await asyncio.sleep(0)
        monkeypatch.setattr(_turns, "SLICE", 60.0)  # ...and none uses the slice up
        asyncio.get_running_loop().call_soon(count)
        await asyncio.gather(*tasks)

    asyncio.run(main())
    assert len(resumed) == 50
    # One pass each (and a few to get going); with a gap before each, three.
    assert resumed[-1] - resumed[0] <= 55, resumed
