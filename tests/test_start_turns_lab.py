"""A start on many links gives the loop its turns, and can be ended in the middle.

mcastio's own host reader runs on a thread of its own while the loop runs on,
shared by the endpoints started together; the joins run in slices. An endpoint
closed (or a start cancelled) meanwhile leaves no socket, task or thread behind,
and the other endpoints of the same start carry on.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
import time
from collections.abc import Iterator

import pytest

from mcastio import EndpointClosedError, MulticastEndpoint, _turns
from mcastio.testing import Lab
from tests.conftest import module_lab, run

pytestmark = pytest.mark.lab

GROUP = "239.255.44.1"
PORT = 5044
#: veth pairs with both ends in the host: twice as many usable links.
PAIRS = 32


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    for built in module_lab(links=1, ipv6=False):
        lines: list[str] = []
        for n in range(PAIRS):
            lines += [
                f"link add m{n}a type veth peer name m{n}b",
                f"addr add 10.77.{n}.1/24 dev m{n}a",
                f"addr add 10.77.{n}.2/24 dev m{n}b",
                f"link set m{n}a up",
                f"link set m{n}b up",
            ]
        # One `ip` for every link: a lab of 64 links in a fraction of a second.
        batch = tmp_path_factory.mktemp("links") / "batch"
        batch.write_text("\n".join(lines) + "\n")
        built.sh(built.host, f"ip -batch {batch}")
        # A veth's carrier comes up a moment after `link set up`, later on a busy
        # machine; an endpoint started before then leaves those links out.
        deadline = time.monotonic() + 15
        while (up := _carriers(built)) < 2 * PAIRS and time.monotonic() < deadline:
            time.sleep(0.05)
        assert up == 2 * PAIRS, f"{up} of {2 * PAIRS} veth ends have a carrier"
        yield built


def _carriers(lab: Lab) -> int:
    out = lab.sh(lab.host, "ip -o link show").stdout
    return sum(
        1 for line in out.splitlines() if re.match(r"\d+: m\d+[ab]@", line) and "LOWER_UP" in line
    )


def fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def usable(ep: MulticastEndpoint) -> int:
    return sum(1 for i in ep.interfaces if i.name.startswith("m"))


def test_the_loop_runs_during_a_start_on_many_links(lab: Lab) -> None:
    async def main() -> tuple[int, int]:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        ticker = asyncio.create_task(tick())
        await asyncio.sleep(0)
        ep = MulticastEndpoint(GROUP, PORT)
        try:
            before = ticks
            await ep.start()
            during = ticks - before
            return during, usable(ep)
        finally:
            await ep.aclose()
            ticker.cancel()
            await asyncio.wait({ticker})

    with lab.inside():
        during, links = run(main())
    assert links == 2 * PAIRS
    # Another task ran while the endpoint started (no figure: a busy machine varies).
    assert during >= 1


@pytest.mark.parametrize("busy", [False, True], ids=["quiet", "busy"])
def test_closed_in_the_middle_of_a_start_leaves_nothing(
    lab: Lab, monkeypatch: pytest.MonkeyPatch, busy: bool
) -> None:
    if busy:
        # As on a busy machine, where a slice passes between the two starts: the
        # second waits for its turn, unattached, while the first reads the host
        # and is closed (the last endpoint on that reading, which stops).
        monkeypatch.setattr(_turns, "SLICE", 1e-9)

    async def main() -> tuple[int, set[str], set[threading.Thread]]:
        before_fds = fds()
        before_threads = set(threading.enumerate())
        first = MulticastEndpoint(GROUP, PORT)
        second = MulticastEndpoint("239.255.44.2", PORT)
        starts = [asyncio.create_task(ep.start()) for ep in (first, second)]
        # Both starts are under way (reading the host, which they share).
        await asyncio.sleep(0)
        assert not first.interfaces
        assert not second.interfaces
        await first.aclose()
        with pytest.raises(EndpointClosedError):
            await starts[0]
        # The other endpoint of the same start carries on.
        await starts[1]
        links = usable(second)
        await second.aclose()
        # Joined by now: the reading thread, and every socket of both.
        left_threads = {t for t in threading.enumerate() if t.is_alive()} - before_threads
        return links, fds() - before_fds, left_threads

    with lab.inside():
        links, left_fds, left_threads = run(main())
    assert links == 2 * PAIRS
    assert not left_fds
    assert not left_threads


def test_cancelled_start_joins_its_thread(lab: Lab) -> None:
    async def main() -> tuple[set[str], set[threading.Thread]]:
        before_fds = fds()
        before_threads = set(threading.enumerate())
        ep = MulticastEndpoint(GROUP, PORT)
        start = asyncio.create_task(ep.start())
        await asyncio.sleep(0)
        start.cancel()
        with pytest.raises(asyncio.CancelledError):
            await start
        left_threads = {t for t in threading.enumerate() if t.is_alive()} - before_threads
        await ep.aclose()
        return fds() - before_fds, left_threads

    with lab.inside():
        left_fds, left_threads = run(main())
    assert not left_threads
    assert not left_fds


def test_closed_while_joining_on_many_links_leaves_nothing(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Closed once some links are joined (the joins run in slices)."""
    # A slice of 0.2 ms: 1,024 joins took one 5 ms slice on a quiet machine, and the
    # test is of a close between slices, not of how many joins one slice holds.
    monkeypatch.setattr(_turns, "SLICE", 0.0002)

    async def main() -> tuple[int, bool, set[str]]:
        before_fds = fds()
        # Sixteen groups on 64 links: more joins than one slice of the loop holds.
        ep = MulticastEndpoint([f"239.255.45.{n}" for n in range(1, 17)], PORT)
        start = asyncio.create_task(ep.start())
        seen = 0
        while not start.done():
            seen = max(seen, usable(ep))
            if seen:
                await ep.aclose()
                break
            await asyncio.sleep(0)
        try:
            await start
        except EndpointClosedError:
            refused = True
        else:
            refused = False
        await ep.aclose()
        return seen, refused, fds() - before_fds

    with lab.inside():
        seen, refused, left_fds = run(main())
    # Some links were joined, not all, when it closed; and the start said so.
    assert 0 < seen < 2 * PAIRS
    assert refused
    assert not left_fds
