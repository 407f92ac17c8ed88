"""Cheaper ways to build the values the hot paths produce by the thousand.

The values stay the frozen, slotted dataclasses of ``_model``; only the way they
are constructed differs. :class:`Coalescing` decides when a flood is read in
larger batches. Pure: no sockets, no asyncio.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

from ._model import Datagram, SendResult

__all__ = ["DATAGRAM_SLOT_SETTERS", "Coalescing", "OkResults", "new_datagram", "ok_results"]

# A frozen dataclass __init__ goes through object.__setattr__ once per field;
# setting the slots directly builds an identical value at about half the cost.
DATAGRAM_SLOT_SETTERS: tuple[Callable[[Datagram, Any], None], ...] = tuple(
    vars(Datagram)[name].__set__ for name in ("data", "source", "group", "interface", "ttl")
)

_new = object.__new__


def new_datagram(
    data: bytes, source: Any, group: str, interface: str, ttl: int | None = None
) -> Datagram:
    """Same as ``Datagram(data, source, group, interface, ttl)``, built faster."""
    set_data, set_source, set_group, set_interface, set_ttl = DATAGRAM_SLOT_SETTERS
    dgram: Datagram = _new(Datagram)
    set_data(dgram, data)
    set_source(dgram, source)
    set_group(dgram, group)
    set_interface(dgram, interface)
    set_ttl(dgram, ttl)
    return dgram


class OkResults(dict[int, SendResult]):
    """Successful :class:`SendResult` values of one interface, shared per size.

    A result is an immutable value, so every successful send of the same size on
    the same interface can hand back the same instance instead of building one.
    ``results[sent]`` is a plain dict hit after the first time.
    """

    __slots__ = ("interface",)

    #: Results remembered per instance; beyond that, results are built afresh.
    LIMIT = 256

    def __init__(self, interface: str) -> None:
        super().__init__()
        self.interface = interface

    def __missing__(self, sent: int) -> SendResult:
        result = SendResult(self.interface, None, sent)
        if len(self) < self.LIMIT:
            self[sent] = result
        return result


@functools.lru_cache(maxsize=4096)
def ok_results(interface: str) -> OkResults:
    """The interface's :class:`OkResults`, one per name in the process: every endpoint
    on it hands back the same values (4 endpoints on 1,024 links built 4,096)."""
    return OkResults(interface)


class Coalescing:
    """When to defer a socket's next read, so that a flood is read in large batches.

    Each wake-up of the event loop costs several microseconds whatever it reads. A
    flood found ``threshold`` datagrams within one ``delay`` (at least
    :attr:`FLOOD_RATE` per second) makes the reader stop watching the socket and
    read it again ``delay`` seconds later, then every ``delay`` while the flood
    lasts; below that rate every datagram is read as soon as it arrives, so light
    traffic waits for nothing. ``delay`` 0 turns coalescing off.
    """

    __slots__ = ("_count", "_since", "delay", "threshold")

    #: Datagrams per second below which reads are never deferred.
    FLOOD_RATE = 8000

    def __init__(self, delay: float) -> None:
        self.delay = delay
        # At least a few datagrams, so that two arriving together never count as a flood.
        self.threshold = max(8, math.ceil(self.FLOOD_RATE * delay))
        self._since = -math.inf
        self._count = 0

    def after_wakeup(self, read: int, now: float) -> bool:
        """After a read on readiness: whether to defer the next read by ``delay``."""
        if not self.delay:
            return False
        if now - self._since > self.delay:
            self._since = now
            self._count = 0
        self._count += read
        return self._count >= self.threshold

    def after_deferred(self, read: int, more_waiting: bool) -> float | None:
        """After a deferred read: the wait before the next one, or None to watch again."""
        if more_waiting:
            # The read stopped at its budget, not at an empty socket.
            return 0.0
        if read >= self.threshold:
            return self.delay
        self._since = -math.inf
        return None
