"""The readers of one endpoint: datagram subscriptions and interface-event streams.

Subscriptions are held weakly, so an iterator abandoned after ``break`` is
released instead of being fed for the endpoint's whole life; while a task waits
on one, it is held strongly (see :class:`._stream.Anchor`), so the task is not
garbage-collected in the middle of ``async for``.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable, Sequence

from ._model import Datagram
from ._receive import ReceivePath
from ._stream import Anchor, DropTally
from ._subscription import Subscription
from ._watch import InterfaceEvent
from ._watcher import InterfaceEventStream

__all__ = ["Readers"]

_log = logging.getLogger("mcastio")


class Readers:
    """Feeds subscriptions from the receive path and events to their listeners."""

    def __init__(
        self,
        receive: ReceivePath,
        on_interface_event: Callable[[InterfaceEvent], None] | None,
    ) -> None:
        self._receive = receive
        self._on_interface_event = on_interface_event
        self._subs: dict[int, weakref.ref[Subscription]] = {}
        # Weak, so an abandoned stream is released; the anchor pins one a task waits on.
        self._event_streams: dict[int, tuple[weakref.ref[InterfaceEventStream], Anchor]] = {}
        #: Drops summed over every subscription, never decreasing.
        self.drops = DropTally()

    @property
    def subscriptions(self) -> int:
        return len(self._subs)

    def subscribe(self, queue_size: int) -> Subscription:
        sub = Subscription(queue_size, self.drops)
        sub._on_close = self.attach(sub)
        return sub

    def attach(self, sub: Subscription) -> Callable[..., None]:
        """Feed ``sub`` until it is closed or collected; returns the detach function."""
        key = id(sub)
        receive = self._receive

        def detach(*_: object) -> None:
            if self._subs.pop(key, None) is not None:
                receive.remove_sink(feed)

        ref = weakref.ref(sub, detach)

        # The anchor rides along: while a task waits on ``sub`` it holds ``sub``, and
        # this sink is what the event loop (through the receive socket) reaches.
        def feed(batch: list[Datagram], _anchor: Anchor = sub._anchor) -> None:
            target = ref()
            if target is not None:
                target._feed(batch)

        self._subs[key] = ref
        # Ahead of any protocol sink: a protocol callback that raises ends that
        # batch's loop, and must not starve the subscriptions.
        receive.add_sink(feed, first=True)
        return detach

    def event_stream(self, queue_size: int) -> InterfaceEventStream:
        stream = InterfaceEventStream(queue_size)
        key = id(stream)
        streams = self._event_streams

        def forget(*_: object) -> None:
            streams.pop(key, None)

        streams[key] = (weakref.ref(stream, forget), stream._anchor)
        stream._on_close = forget
        return stream

    def _live_event_streams(self) -> list[InterfaceEventStream]:
        live = (ref() for ref, _anchor in list(self._event_streams.values()))
        return [stream for stream in live if stream is not None]

    def emit(
        self, group: str, events: Sequence[InterfaceEvent], loop: asyncio.AbstractEventLoop | None
    ) -> None:
        for event in events:
            _log.info("%s: interface %s", group, event)
            for stream in self._live_event_streams():
                stream._push(event)
            if self._on_interface_event is not None and loop is not None:
                # Run the callback on its own, so one that raises cannot stop the watcher.
                loop.call_soon(self._on_interface_event, event)

    def discard_group(self, group: str) -> None:
        """Drop what every subscription still queues of ``group`` (it was just left)."""
        for ref in list(self._subs.values()):
            sub = ref()
            if sub is not None:
                sub._discard_group(group)

    def close(self) -> None:
        """End every reader; what is still queued is discarded."""
        for stream in self._live_event_streams():
            stream._end()
        self._event_streams.clear()
        for ref in list(self._subs.values()):
            sub = ref()
            if sub is not None:
                sub._on_close = None
                sub._end()
        self._subs.clear()
        self._receive.clear_sinks()
