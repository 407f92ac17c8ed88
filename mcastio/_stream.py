"""A bounded, drop-oldest queue behind ``async for``: the base of every reader.

Items come from the network or the kernel, so the queue never grows past its
bound: when a reader falls behind, the *oldest* items are dropped and counted,
and the reader always sees the freshest ones.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

if TYPE_CHECKING:
    # Type-checking only: no runtime dependency on typing_extensions for Python 3.10.
    from typing_extensions import Self

__all__ = ["Anchor", "BoundedStream", "ClosingContext", "DropTally"]

T = TypeVar("T")


class DropTally:
    """A running total of drops, shared by an owner's streams so it never decreases."""

    __slots__ = ("total",)

    def __init__(self) -> None:
        self.total = 0


class Anchor:
    """What a producer holds of its reader: nothing, except while a task waits on it.

    A task parked on a future lives only as long as something will complete that
    future. Producers hold readers weakly (an iterator abandoned after ``break``
    must be released), so they hold this too: while a task waits, ``held`` is the
    reader, and the task lives as long as one waiting on an asyncio socket does.
    """

    __slots__ = ("held",)

    def __init__(self) -> None:
        self.held: object = None


class ClosingContext:
    """``async with reader:`` closes the reader on the way out."""

    __slots__ = ()

    def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class BoundedStream(ClosingContext, Generic[T]):
    """A reader of at most ``queue_size`` queued items, ending on :meth:`close`."""

    __slots__ = (
        "__weakref__",
        "_anchor",
        "_closed",
        "_on_close",
        "_queue",
        "_tally",
        "_waiter",
        "dropped",
    )

    #: Whether close() discards what is still queued (else the reader drains it first).
    _DISCARD_ON_CLOSE: ClassVar[bool] = True

    def __init__(self, queue_size: int, tally: DropTally | None = None) -> None:
        self._queue: deque[T] = deque(maxlen=queue_size)
        self._tally = tally
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        # Set by the owner so that close() also stops feeding this stream.
        self._on_close: Callable[[Any], None] | None = None
        #: Held by every producer feeding this stream; pins it while a task waits.
        self._anchor = Anchor()
        #: Items discarded because this reader's queue was full.
        self.dropped = 0

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def queued(self) -> int:
        return len(self._queue)

    def _feed(self, items: list[T]) -> None:
        queue = self._queue
        overflow = len(queue) + len(items) - queue.maxlen  # type: ignore[operator]
        if overflow > 0:
            self.dropped += overflow
            if self._tally is not None:
                self._tally.total += overflow
        queue.extend(items)
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _end(self) -> None:
        self._closed = True
        if self._DISCARD_ON_CLOSE:
            self._queue.clear()
        self._wake()

    def close(self) -> None:
        """Stop receiving; a pending or later ``__anext__`` ends the iteration."""
        self._end()
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close(self)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> T:
        while True:
            if self._queue:
                return self._queue.popleft()
            if self._closed:
                raise StopAsyncIteration
            await self._wait()

    async def _wait(self) -> None:
        if self._waiter is not None:
            # One wake-up slot: a second waiting task would never be woken.
            raise RuntimeError(
                "another task is already reading this stream; give each task its own"
            )
        waiter = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        self._anchor.held = self
        try:
            await waiter
        finally:
            self._waiter = None
            self._anchor.held = None
