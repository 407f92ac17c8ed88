"""The keepers' shared pace: at most a slice of work per pass of the loop."""

from __future__ import annotations

import asyncio
import functools
import time

from mcastio._refreshpace import SLICE, RefreshPace
from tests.conftest import run


def test_waiting_work_resumes_in_order_a_slice_per_pass() -> None:
    async def main() -> list[int]:
        pace = RefreshPace(asyncio.get_running_loop())
        ran: list[int] = []
        per_pass: list[int] = []

        def work(i: int) -> None:
            began = time.perf_counter()
            while time.perf_counter() - began < SLICE * 0.4:
                pass
            pace.charge(began)
            ran.append(i)

        for i in range(10):
            pace.defer(functools.partial(work, i))
        while len(ran) < 10:
            before = len(ran)
            await asyncio.sleep(0)
            per_pass.append(len(ran) - before)
        assert ran == list(range(10))
        return per_pass

    per_pass = run(main())
    # 0.4 of a slice each: at most 3 per pass (fewer on a busy machine), never all.
    assert max(per_pass) <= 3
    assert len([n for n in per_pass if n]) >= 4


def test_the_budget_is_new_each_pass() -> None:
    async def main() -> tuple[bool, bool]:
        pace = RefreshPace(asyncio.get_running_loop())
        assert pace.allows()
        pace.spent = SLICE * 2
        spent = pace.allows()
        await asyncio.sleep(0)
        return spent, pace.allows()

    assert run(main()) == (False, True)


def test_a_loop_that_ran_a_keeper_pace_is_not_kept_alive() -> None:
    import gc
    import weakref

    from mcastio import _refreshpace

    loop = asyncio.new_event_loop()
    try:
        _refreshpace.pace_for(loop).allows()
        loop.run_until_complete(asyncio.sleep(0))
    finally:
        loop.close()
    gone = weakref.ref(loop)
    del loop
    gc.collect()
    assert gone() is None
