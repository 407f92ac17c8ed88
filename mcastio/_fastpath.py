"""Cheaper ways to build the values the hot paths produce by the thousand.

The values stay the frozen, slotted dataclasses of ``_model``; only the way they
are constructed differs. Pure: no sockets, no asyncio.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._model import Datagram, SendResult

__all__ = ["DATAGRAM_SLOT_SETTERS", "OkResults", "new_datagram"]

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
