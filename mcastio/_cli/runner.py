"""Running a subcommand's coroutine until it ends or a signal asks it to stop.

Ctrl-C (SIGINT) and SIGTERM both set one event; a command watches it, stops
cleanly and prints its summary. Without this, SIGTERM would kill the process
before the summary, and SIGINT would arrive as a KeyboardInterrupt anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["run_until_stopped"]

T = TypeVar("T")

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def run_until_stopped(make: Callable[[asyncio.Event], Coroutine[Any, Any, T]]) -> T:
    """``asyncio.run(make(stop))``, with SIGINT and SIGTERM setting ``stop``."""

    async def main() -> T:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        installed = []
        for sig in _SIGNALS:
            # Only the main thread may install handlers (tests call main() from
            # other threads too); there the default behaviour stays.
            with contextlib.suppress(ValueError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
                installed.append(sig)
        try:
            return await make(stop)
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    return asyncio.run(main())


async def wait_or_stop(
    awaitable: Coroutine[Any, Any, T], stop: asyncio.Event, timeout: float | None = None
) -> tuple[bool, T | None]:
    """Await ``awaitable`` unless ``stop`` is set or ``timeout`` passes first.

    Returns (finished, result); an unfinished awaitable is cancelled.
    """
    task = asyncio.ensure_future(awaitable)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        done, _ = await asyncio.wait(
            {task, stopper}, timeout=timeout, return_when="FIRST_COMPLETED"
        )
    finally:
        for t in (task, stopper):
            if not t.done():
                t.cancel()
        for t in (task, stopper):
            with contextlib.suppress(asyncio.CancelledError):
                await t
    if task in done and not task.cancelled():
        return True, task.result()
    return False, None
