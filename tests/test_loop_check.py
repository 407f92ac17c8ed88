"""An endpoint refuses a loop that cannot watch sockets, naming it and what to use.

asyncio's default loop on Windows (ProactorEventLoop) has no add_reader: its
add_reader raises NotImplementedError, as AbstractEventLoop's does. A real
SelectorEventLoop whose add_reader does the same stands in for it here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

import mcastio
from mcastio._platform.loops import require_readers
from mcastio.testing import Lab


class NoReadersLoop(asyncio.SelectorEventLoop):
    """A selector loop without add_reader, as asyncio's Proactor loop is."""

    def add_reader(self, fd: Any, callback: Callable[..., object], *args: Any) -> None:  # type: ignore[override]
        raise NotImplementedError


class CountingLoop(asyncio.SelectorEventLoop):
    probes = 0

    def add_reader(self, fd: Any, callback: Callable[..., object], *args: Any) -> None:  # type: ignore[override]
        CountingLoop.probes += 1
        super().add_reader(fd, callback, *args)


def _run(loop: asyncio.AbstractEventLoop, coro: Any) -> Any:
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


@pytest.mark.lab
@pytest.mark.one_path
def test_an_endpoint_on_a_loop_without_add_reader_says_which_loop_and_what_to_use(
    make_lab: Callable[..., Lab],
) -> None:
    # In a lab: the host has a usable link, so only the loop check stands between
    # this start and a NotImplementedError from the first reader.
    lab = make_lab(links=1)
    ep = mcastio.MulticastEndpoint("239.255.45.1", 5045, watch=False)

    async def main() -> None:
        with pytest.raises(mcastio.MulticastError) as caught:
            await ep.start()
        text = str(caught.value)
        assert "NoReadersLoop" in text
        assert "asyncio.SelectorEventLoop" in text
        assert "WindowsSelectorEventLoopPolicy" in text
        # Refused before anything opened: nothing to close, and closing still works.
        assert ep.interfaces == ()
        await ep.aclose()

    with lab.inside():
        _run(NoReadersLoop(), main())


def test_a_selector_loop_passes_and_is_probed_once() -> None:
    loop = CountingLoop()

    async def main() -> None:
        require_readers(loop)
        require_readers(loop)

    before = CountingLoop.probes
    _run(loop, main())
    assert CountingLoop.probes - before == 1
