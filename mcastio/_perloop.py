"""One value per event loop: made on first use, collected with its loop.

The keepers' pace and the shared transmit sockets each keep one of their kind per
loop. The values must not hold their loop strongly: a value of a WeakKeyDictionary
that refers to its own key keeps the key alive.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["PerLoop"]

_T = TypeVar("_T")


class PerLoop(Generic[_T]):
    """``registry(loop)``: that loop's value, made by ``make(loop)`` the first time."""

    def __init__(self, make: Callable[[asyncio.AbstractEventLoop], _T]) -> None:
        self._make = make
        self._values: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _T] = (
            weakref.WeakKeyDictionary()
        )

    def __call__(self, loop: asyncio.AbstractEventLoop) -> _T:
        value = self._values.get(loop)
        if value is None:
            value = self._values[loop] = self._make(loop)
        return value
