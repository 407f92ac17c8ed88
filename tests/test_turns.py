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
