"""Long work on the event loop, in turns: yield after a few milliseconds of it.

Starting an endpoint on a thousand links, or a hundred endpoints with ``gather``,
is a few hundred milliseconds of system calls. Done at once it holds the loop,
so nothing else (a reader, a timer, another endpoint's datagrams) runs meanwhile.

The clock is shared by everything in one loop. Work that has used up its slice
queues for the next one, and one queued piece resumes at a time, so a hundred
gathered starts cost the loop one slice at a time, not a hundred wake-ups.

Between two slices the loop makes two more passes. A timer that fell due during
a slice fires in the pass after it, and the task it wakes runs in the pass after
that: with one pass between slices, as before, such a task (an ``asyncio.sleep``,
a ``wait_for`` deadline) waited for up to three slices back to back; now for at
most the one under way.
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


#: Passes of the loop between the end of one slice and the start of the next,
#: besides the one the next slice runs in: the due timer's, then its task's.
_GAP = 2


def _release(loop: asyncio.AbstractEventLoop, gap: int = _GAP) -> None:
    """Let the oldest waiting work run: after ``gap`` more passes if the slice is used
    up, else in the next pass (small pieces of work share a slice); the next one after it.
    """
    if gap and turn_due(loop):
        loop.call_soon(_release, loop, gap - 1)
        return
    queue = _queues.get(loop)
    while queue:
        waiter = queue.popleft()
        if not waiter.done():  # A cancelled start no longer waits.
            waiter.set_result(None)
            break
    if queue:
        # Scheduled after the released work's wake-up: it sees what that work used.
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
    if turn_due(loop):
        # Resumed after a gap: a new slice. Else it goes on with the one under way.
        _began[loop] = time.perf_counter()
