"""A bounded, drop-oldest queue of datagrams behind ``async for``."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from types import TracebackType

from ._model import Datagram

__all__ = ["BatchSubscription", "Subscription"]


class Subscription:
    """One independent reader of an endpoint's datagrams.

    The queue holds at most ``queue_size`` datagrams. When a consumer falls behind,
    the *oldest* queued datagrams are dropped so it always sees the freshest data;
    ``dropped`` counts them. Iteration ends when the endpoint closes or when
    :meth:`close` is called; datagrams still queued then are discarded.
    """

    __slots__ = ("__weakref__", "_closed", "_loop", "_on_close", "_queue", "_waiter", "dropped")

    def __init__(self, queue_size: int, loop: asyncio.AbstractEventLoop) -> None:
        self._queue: deque[Datagram] = deque(maxlen=queue_size)
        self._loop = loop
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        # Set by the endpoint so that close() also stops the fan-out to this queue.
        self._on_close: Callable[[Subscription], None] | None = None
        #: Datagrams discarded because this subscriber's queue was full.
        self.dropped = 0

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def queued(self) -> int:
        return len(self._queue)

    def _feed(self, batch: list[Datagram]) -> None:
        queue = self._queue
        overflow = len(queue) + len(batch) - queue.maxlen  # type: ignore[operator]
        if overflow > 0:
            self.dropped += overflow
        queue.extend(batch)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _end(self) -> None:
        self._closed = True
        self._queue.clear()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def close(self) -> None:
        """Stop receiving; a pending or later ``__anext__`` ends the iteration."""
        self._end()
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close(self)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Datagram:
        while True:
            if self._queue:
                return self._queue.popleft()
            if self._closed:
                raise StopAsyncIteration
            await self._wait()

    async def get_batch(self, max_items: int | None = None) -> list[Datagram]:
        """Wait for at least one datagram and return every queued one (up to ``max_items``).

        Returns an empty list once the subscription has ended.
        """
        while not self._queue:
            if self._closed:
                return []
            await self._wait()
        queue = self._queue
        if max_items is None or max_items >= len(queue):
            batch = list(queue)
            queue.clear()
            return batch
        return [queue.popleft() for _ in range(max_items)]

    async def _wait(self) -> None:
        waiter = self._loop.create_future()
        self._waiter = waiter
        try:
            await waiter
        finally:
            self._waiter = None

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class BatchSubscription:
    """One independent reader that yields lists of datagrams, from ``ep.batches()``.

    It has the same bounded, drop-oldest queue as :class:`Subscription` (and
    counts drops the same way), but each step of ``async for`` hands over every
    queued datagram at once (at most ``max_batch``), oldest first, so a consumer
    pays the cost of waking up once per burst instead of once per datagram.
    """

    __slots__ = ("_max_batch", "_sub")

    def __init__(self, sub: Subscription, max_batch: int | None = None) -> None:
        self._sub = sub
        self._max_batch = max_batch

    @property
    def closed(self) -> bool:
        return self._sub.closed

    @property
    def queued(self) -> int:
        return self._sub.queued

    @property
    def dropped(self) -> int:
        """Datagrams discarded because this subscriber's queue was full."""
        return self._sub.dropped

    def close(self) -> None:
        """Stop receiving; a pending or later ``__anext__`` ends the iteration."""
        self._sub.close()

    def __aiter__(self) -> BatchSubscription:
        return self

    async def __anext__(self) -> list[Datagram]:
        batch = await self._sub.get_batch(self._max_batch)
        if not batch:
            raise StopAsyncIteration
        return batch

    async def __aenter__(self) -> BatchSubscription:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
