"""The keepers' refreshes, paced: at most a slice of work per pass of the event loop.

A hundred keepers on sixteen links make 1,600 reports per interval, and their
timers come due together (a keeper refreshes all its links at once; a hundred
keepers started together, or woken late by a busy machine, fall due in one pass).
Done at once that is milliseconds of system calls while nothing else runs. Every
keeper of a loop shares one budget per pass: past it, a keeper stops and finishes
its due refreshes in a later pass (its timer fires again at once, being due).
"""

from __future__ import annotations

import asyncio
import collections
import time
import weakref
from collections.abc import Callable

from ._perloop import PerLoop

__all__ = ["SLICE", "RefreshPace", "pace_for"]

#: Seconds of refresh work per pass of the loop, shared by every keeper of the loop.
SLICE = 0.001


class RefreshPace:
    """The refresh work done in the current pass of one loop."""

    __slots__ = ("__weakref__", "_armed", "_loop", "_waiting", "spent")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # Weak: the pace is a PerLoop value, and a strong reference would keep
        # every loop that ever ran a keeper alive.
        self._loop = weakref.ref(loop)
        self._armed = False
        self._waiting: collections.deque[Callable[[], None]] = collections.deque()
        self.spent = 0.0

    def allows(self) -> bool:
        """Whether more refresh work fits in this pass."""
        if not self._armed:
            # Runs at the start of the next pass: handles queued during this one
            # run before that pass's timers.
            loop = self._loop()
            if loop is None or loop.is_closed():
                return self.spent < SLICE  # no later pass to wait for
            self._armed = True
            loop.call_soon(self._new_pass)
        return self.spent < SLICE

    def charge(self, began: float) -> None:
        """Work that began at ``began`` (``time.perf_counter()``) just ended."""
        self.spent += time.perf_counter() - began

    def defer(self, resume: Callable[[], None]) -> None:
        """Call ``resume`` in a later pass, when the budget allows."""
        self._waiting.append(resume)
        self.allows()

    def _new_pass(self) -> None:
        self._armed = False
        self.spent = 0.0
        waiting = self._waiting
        while waiting and self.spent < SLICE:
            # Each resumed keeper charges its own work (and may defer again).
            waiting.popleft()()
        if waiting:
            self.allows()


#: The loop's pace, shared by its keepers.
pace_for: PerLoop[RefreshPace] = PerLoop(RefreshPace)
