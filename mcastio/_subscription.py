"""Readers of an endpoint's datagrams: one at a time, or in batches."""

from __future__ import annotations

from collections import deque

from ._model import Datagram
from ._stream import BoundedStream, ClosingContext, DropTally

__all__ = ["BatchSubscription", "Subscription"]


class Subscription(BoundedStream[Datagram]):
    """One independent reader of an endpoint's datagrams.

    The queue holds at most ``queue_size`` datagrams. When a consumer falls behind,
    the *oldest* queued datagrams are dropped so it always sees the freshest data;
    ``dropped`` counts them. Iteration ends when the endpoint closes or when
    :meth:`close` is called; datagrams still queued then are discarded.

    Replies (``group`` None) have a queue of their own, of the same size: a flood
    of unicast to a transmit port evicts older replies, never group datagrams.
    While both hold datagrams the reader takes them in turn, so a reply flood
    costs group traffic at most half of the reader's pace.
    """

    __slots__ = ("_replies", "_reply_turn", "replies_dropped")

    def __init__(self, queue_size: int, tally: DropTally | None = None) -> None:
        super().__init__(queue_size, tally)
        self._replies: deque[Datagram] = deque(maxlen=queue_size)
        self._reply_turn = False
        #: Replies discarded because this reader's reply queue was full (in ``dropped`` too).
        self.replies_dropped = 0

    @property
    def queued(self) -> int:
        return len(self._queue) + len(self._replies)

    def _feed(self, items: list[Datagram]) -> None:
        # A batch comes from one socket: group traffic from a receive socket, or
        # replies from a transmit socket, never both (see :mod:`._replies`).
        if not items or items[0].group is not None:
            super()._feed(items)
            return
        replies = self._replies
        overflow = len(replies) + len(items) - replies.maxlen  # type: ignore[operator]
        if overflow > 0:
            self.dropped += overflow
            self.replies_dropped += overflow
            if self._tally is not None:
                self._tally.total += overflow
        replies.extend(items)
        self._wake()

    def _pop(self) -> Datagram | None:
        """The next datagram: group traffic and replies in turn while both wait."""
        replies = self._replies
        if replies:
            queue = self._queue
            if queue and not self._reply_turn:
                self._reply_turn = True
                return queue.popleft()
            self._reply_turn = False
            return replies.popleft()
        if self._queue:
            return self._queue.popleft()
        return None

    def _end(self) -> None:
        super()._end()
        if self._DISCARD_ON_CLOSE:
            self._replies.clear()

    async def __anext__(self) -> Datagram:
        while True:
            if self._queue and not self._replies:
                return self._queue.popleft()
            dgram = self._pop()
            if dgram is not None:
                return dgram
            if self._closed:
                raise StopAsyncIteration
            await self._wait()

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
        while not self._queue and not self._replies:
            if self._closed:
                return []
            await self._wait()
        queue, replies = self._queue, self._replies
        if max_items is None or max_items >= len(queue) + len(replies):
            batch = [*queue, *replies]
            queue.clear()
            replies.clear()
            return batch
        if not replies:
            return [queue.popleft() for _ in range(max_items)]
        batch = []
        for _ in range(max_items):
            dgram = self._pop()
            assert dgram is not None  # max_items < what is queued
            batch.append(dgram)
        return batch


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
