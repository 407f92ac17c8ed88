"""The keepers' shared table of IGMP versions: a read abandoned with its loop restarts."""

from __future__ import annotations

import asyncio
import time

from mcastio import _hostreport


def test_a_read_left_by_a_loop_that_ended_is_abandoned_and_restarted() -> None:
    table = _hostreport._SlicedVersions()
    table.get()  # the first read is done at once
    assert table.table is not None
    first = asyncio.new_event_loop()
    try:
        # Stale: the next get() begins a background read stepped by this loop...
        table.read_at = time.monotonic() - 60

        async def begin() -> None:
            table.get()

        first.run_until_complete(begin())
        left = table._fd
        assert left is not None
    finally:
        # ...which ends before the read's first step ran (call_soon, never run).
        first.close()
    second = asyncio.new_event_loop()
    try:

        async def again() -> int | None:
            table.get()
            return table._fd

        now = second.run_until_complete(again())
        # A new read, stepped by this loop (the left one's descriptor was closed).
        assert now is not None
        assert table._reader is not None
        assert table._reader() is second
        second.run_until_complete(asyncio.sleep(0.05))
        assert table._fd is None  # finished: every slice read
        assert table.table is not None
    finally:
        table.stop()
        second.close()
