"""Readers of an endpoint's datagrams: one at a time, or in batches."""

from __future__ import annotations

from ._model import Datagram
from ._stream import BoundedStream, ClosingContext

__all__ = ["BatchSubscription", "Subscription"]


class Subscription(BoundedStream[Datagram]):
    """One independent reader of an endpoint's datagrams.

    The queue holds at most ``queue_size`` datagrams. When a consumer falls behind,
    the *oldest* queued datagrams are dropped so it always sees the freshest data;
    ``dropped`` counts them. Iteration ends when the endpoint closes or when
    :meth:`close` is called; datagrams still queued then are discarded.
    """

    __slots__ = ()

    def _discard_group(self, group: str) -> None:
        """Forget the queued datagrams of ``group``: the endpoint just left it."""
        queue = self._queue
        if any(d.group == group for d in queue):
            kept = [d for d in queue if d.group != group]
            queue.clear()
            queue.extend(kept)

    async def get_batch(self, max_items: int | None = None) -> list[Datagram]:
        """Wait for at least one datagram and return every queued one (up to ``max_items``).

        Returns an empty list once the subscription has ended.
        """
        if max_items is not None and max_items < 1:
            raise ValueError(f"max_items must be a positive integer or None, not {max_items!r}")
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


class BatchSubscription(ClosingContext):
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
