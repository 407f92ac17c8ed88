"""Long work on the event loop, in turns: yield after a few milliseconds of it.

Starting an endpoint on a thousand links, or a hundred endpoints with ``gather``,
is a few hundred milliseconds of system calls. Done at once it holds the loop,
so nothing else (a reader, a timer, another endpoint's datagrams) runs meanwhile.

The clock is shared by everything in one loop. Work that has used up its slice
queues for the next one; one queued piece resumes per pass of the loop, so a
hundred gathered starts cost the loop one slice per pass, not a hundred wake-ups.
"""

from __future__ import annotations

import asyncio
import collections
import time
import weakref

__all__ = ["SLICE", "take_turn", "turn_due"]

#: Seconds of work before the loop gets a turn.
SLICE = 0.005

# When the running slice of each loop began.
_began: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, float] = weakref.WeakKeyDictionary()
# The work waiting for a slice, oldest first.
_queues: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, collections.deque[asyncio.Future[None]]
] = weakref.WeakKeyDictionary()


def _release(loop: asyncio.AbstractEventLoop) -> None:
    """Let the oldest waiting work run in the next pass; the next one after it."""
    queue = _queues.get(loop)
    while queue:
        waiter = queue.popleft()
        if not waiter.done():  # A cancelled start no longer waits.
            waiter.set_result(None)
            break
    if queue:
        loop.call_soon(_release, loop)


def turn_due(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether :func:`take_turn` would wait now: the work so far used this slice up."""
    now = time.perf_counter()
    return now - _began.setdefault(loop, now) >= SLICE


async def take_turn(loop: asyncio.AbstractEventLoop) -> None:
    """Wait for the next slice if the work so far (in this loop) used this one up."""
    now = time.perf_counter()
    if now - _began.setdefault(loop, now) < SLICE:
        return
    queue = _queues.setdefault(loop, collections.deque())
    waiter = loop.create_future()
    queue.append(waiter)
    if len(queue) == 1:
        loop.call_soon(_release, loop)
    await waiter
    _began[loop] = time.perf_counter()
