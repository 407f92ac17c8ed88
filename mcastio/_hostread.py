"""Read the host's interfaces on a thread of its own, so the event loop runs meanwhile.

On a host with a thousand links, :func:`._discovery.read_snapshot` is a couple of
hundred milliseconds of psutil, netifaces, a netlink dump and building the
``Interface`` values: done on the loop, it is one stall that long. Only mcastio's
own reader goes to a thread (it touches nothing the loop owns); a user's
``snapshot_source`` is called on the loop, as documented.

The thread lives for one read, and is joined before the read's result is
returned (or its cancellation passed on), so nothing outlives the start.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import TypeVar

__all__ = ["read_off_loop"]

_T = TypeVar("_T")


def _settle(future: asyncio.Future[_T], result: _T | None, exc: BaseException | None) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)  # type: ignore[arg-type]


async def read_off_loop(loop: asyncio.AbstractEventLoop, read: Callable[[], _T]) -> _T:
    """``read()`` on a new thread; its result, or what it raised."""
    done: asyncio.Future[_T] = loop.create_future()

    def run() -> None:
        result: _T | None = None
        error: BaseException | None = None
        try:
            result = read()
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
            error = exc
        # The loop was closed meanwhile (RuntimeError): nobody waits for the reading.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_settle, done, result, error)

    # A thread created by the loop's thread shares its network namespace (a lab's
    # setns() thread included), so the read sees the same host.
    thread = threading.Thread(target=run, name="mcastio-read-host", daemon=True)
    thread.start()
    try:
        return await asyncio.shield(done)
    except asyncio.CancelledError:
        # A read cannot be stopped: let it end before the cancellation goes on, so
        # no thread (and no netlink descriptor of its own) outlives the caller.
        await asyncio.wait({done})
        if not done.cancelled():
            done.exception()  # Retrieved: the caller no longer wants it.
        raise
    finally:
        thread.join()
