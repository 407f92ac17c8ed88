"""Faults and hostile input on real kernels: nothing stops silently, nothing is lost silently.

Unheld consumer tasks (stdlib loop and uvloop), the IPv6 membership limit
(net.core.optmem_max in the lab's host namespace), labelled addresses, a port
taken without SO_REUSEADDR, buffers of every kind, and tight send loops. The
watcher's faults (EMFILE, flapping links) are in test_faults_watch_lab.py.
"""

from __future__ import annotations

import array
import asyncio
import gc
import importlib.util
import socket
import weakref
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest

from mcastio import MulticastEndpoint, MulticastError, Subscription
from mcastio._discovery import read_snapshot
from mcastio.testing import Lab, LabError
from tests.conftest import run, skip_or_fail, wait_for

pytestmark = pytest.mark.lab

GROUP = "239.255.11.1"
GROUP6 = "ff05::1111"
PORT = 5911

T = TypeVar("T")


async def receive_from_each(sub: Subscription, names: set[str], timeout: float = 5.0) -> set[str]:
    """The interfaces among ``names`` that delivered a datagram within ``timeout``."""
    seen: set[str] = set()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while seen != names and loop.time() < deadline:
        try:
            dgram = await asyncio.wait_for(sub.__anext__(), deadline - loop.time())
        except asyncio.TimeoutError:
            break
        seen.add(dgram.interface)
    return seen


def record_loop_errors() -> list[str]:
    """Everything reported to the running loop's exception handler, as text."""
    reported: list[str] = []

    def handler(_loop: asyncio.AbstractEventLoop, ctx: dict[str, object]) -> None:
        reported.append(f"{ctx.get('message')}: {ctx.get('exception')!r}")

    asyncio.get_running_loop().set_exception_handler(handler)
    return reported


# -- item 1: a consumer task that nobody holds ----------------------------------------


HAVE_UVLOOP = importlib.util.find_spec("uvloop") is not None
if HAVE_UVLOOP:
    import uvloop

    # uvloop opens one process-wide pipe with its first loop and keeps it; open it
    # here so the leak guard does not count it against a uvloop test.
    uvloop.new_event_loop().close()


def run_on(loop_kind: str, coro: Coroutine[Any, Any, T]) -> T:
    """:func:`run` on the stdlib loop, or on uvloop (required under CI=true)."""
    if loop_kind == "asyncio":
        return run(coro)
    if not HAVE_UVLOOP:
        coro.close()
        skip_or_fail("uvloop is not installed (pip install -e '.[test]')")
    loop = uvloop.new_event_loop()
    try:
        return loop.run_until_complete(asyncio.wait_for(coro, 30))
    finally:
        loop.close()


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_an_unheld_consumer_task_survives_gc_and_a_flood(lab: Lab, loop_kind: str) -> None:
    count = 1500

    async def main() -> tuple[list[bytes], list[str]]:
        reported = record_loop_errors()
        got: list[bytes] = []
        ready = asyncio.get_running_loop().create_future()

        async def consume() -> None:
            # The endpoint too is reachable only from this task's frame.
            async with MulticastEndpoint(GROUP, PORT, watch=False, queue_size=4 * count) as ep:
                ready.set_result(None)
                async for dgram in ep:
                    got.append(dgram.data)
                    if dgram.data == b"last":
                        return

        task = weakref.ref(asyncio.create_task(consume()))
        await ready
        gc.collect()
        assert task() is not None, "the waiting task was garbage-collected"
        # A flood from the same host, looped back on eth1, collecting as it goes.
        async with MulticastEndpoint(
            GROUP, PORT, interfaces=["eth1"], loopback=True, watch=False
        ) as tx:
            for n in range(count):
                await tx.send_all(b"%d" % n)
                if n % 300 == 0:
                    gc.collect()
            await tx.send_all(b"last")
        await wait_for(lambda: task() is None or task().done(), what="the consumer finished")  # type: ignore[union-attr]
        return got, reported

    with lab.inside():
        got, reported = run_on(loop_kind, main())
    assert reported == []
    assert got[-1] == b"last"
    assert len(got) == count + 1


# -- item 3: the IPv6 membership limit is net.core.optmem_max --------------------------


def optmem_lab(make_lab: Callable[..., Lab], links: int, optmem: int) -> Lab:
    try:
        return make_lab(links=links, sysctls={"net.core.optmem_max": str(optmem)})
    except LabError as exc:
        if "optmem_max" in str(exc):
            skip_or_fail(f"net.core.optmem_max is not per network namespace here: {exc}")
        raise


def test_ipv6_joins_spread_past_optmem_max(make_lab: Callable[..., Lab]) -> None:
    # 256 bytes of option memory hold 4 IPv6 memberships (one ipv6_mc_socklist each).
    lab = optmem_lab(make_lab, links=6, optmem=256)

    async def main() -> tuple[int, int, set[str]]:
        async with MulticastEndpoint(GROUP6, PORT, watch=False) as ep:
            sub = ep.subscribe()
            for link in lab.link:
                await asyncio.to_thread(lab.peer_send, link, GROUP6, PORT, b"six\n")
            seen = await receive_from_each(sub, {link.host_if for link in lab.link})
            return len(ep.interfaces), len(ep._engine.memberships.sockets), seen

    with lab.inside():
        joined, sockets, seen = run(main())
    assert joined == 6
    assert sockets >= 2
    assert seen == {link.host_if for link in lab.link}


def test_ipv6_join_refused_even_by_a_new_socket_names_the_limit(
    make_lab: Callable[..., Lab],
) -> None:
    # Too little option memory for a single membership: spreading cannot help.
    lab = optmem_lab(make_lab, links=2, optmem=32)

    async def main() -> None:
        for watch in (False, True):
            ep = MulticastEndpoint(GROUP6, PORT, watch=watch)
            with pytest.raises(MulticastError, match=r"ENOMEM.*net\.core\.optmem_max"):
                await ep.start()
            await ep.aclose()

    with lab.inside():
        run(main())


# -- item 4: labelled IPv4 addresses -------------------------------------------------------


def test_labelled_addresses_belong_to_their_device(lab: Lab) -> None:
    link = lab.link[1]
    # eth1's only IPv4 address now carries a label; eth2 gets a labelled second one.
    lab.sh(lab.host, f"ip addr del {link.host_addr}/24 dev eth1")
    lab.sh(lab.host, f"ip addr add {link.host_addr}/24 dev eth1 label eth1:0")
    lab.sh(lab.host, "ip addr add 10.99.2.1/24 dev eth2 label eth2:x")
    listener = lab.peer_listen(link, GROUP, PORT)

    async def main() -> tuple[list[str], list[str]]:
        async with MulticastEndpoint(GROUP, PORT, watch=False) as ep:
            sub = ep.subscribe()
            results = await ep.send_all(b"labelled\n")
            assert all(r.ok for r in results), results
            await asyncio.to_thread(lab.peer_send, link, GROUP, PORT, b"to-eth1\n")
            seen = await receive_from_each(sub, {"eth1"})
            return [i.name for i in ep.interfaces], sorted(seen)

    with lab.inside():
        snapshot = {i.name: i for i in read_snapshot()}
        names, seen = run(main())
    assert "eth1:0" not in snapshot
    assert "eth2:x" not in snapshot
    assert [str(a.ip) for a in snapshot["eth1"].ipv4] == [link.host_addr]
    assert [str(a.ip) for a in snapshot["eth2"].ipv4] == [lab.link[2].host_addr, "10.99.2.1"]
    assert names == ["eth0", "eth1", "eth2"]
    assert seen == ["eth1"]
    # The peer's listener also hears its own peer's send (loopback inside the peer).
    for line in (b"labelled", b"to-eth1"):  # read before the stop kills socat
        listener.wait_for(line)
    assert listener.lines() == [b"labelled", b"to-eth1"]


# -- item 5: bad input that reaches the kernel --------------------------------------------


def test_port_in_use_without_reuseaddr_names_eaddrinuse_and_the_port(lab: Lab) -> None:
    with lab.inside():
        squatter = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with squatter:
        squatter.bind(("0.0.0.0", PORT))

        async def main() -> None:
            for watch in (False, True):
                ep = MulticastEndpoint(GROUP, PORT, watch=watch)
                taken = rf"port {PORT} is already in use \(EADDRINUSE\)"
                with pytest.raises(MulticastError, match=taken):
                    await ep.start()
                await ep.aclose()

        with lab.inside():
            run(main())


def test_any_contiguous_buffer_is_sent_and_strided_views_are_refused(lab: Lab) -> None:
    listener = lab.peer_listen(lab.link[2], GROUP, PORT)

    async def main() -> None:
        async with MulticastEndpoint(GROUP, PORT, interfaces=["eth2"], watch=False) as ep:
            strided = memoryview(b"a-b-c-\n")[::2]
            with pytest.raises(ValueError, match="non-contiguous"):
                await ep.send_all(strided)
            with pytest.raises(ValueError, match="non-contiguous"):
                await ep.send(strided, interface="eth2")
            with pytest.raises(ValueError, match="non-contiguous"):
                ep.send_all_nowait(strided)
            # Typed as bytes, bytearray or memoryview; any contiguous buffer works.
            sent = await ep.send(array.array("b", b"array\n"), interface="eth2")  # type: ignore[arg-type]
            assert sent.sent == 6
            results = await ep.send_all(memoryview(array.array("H", [0x6977, 0x0A64])))
            assert [(r.ok, r.sent) for r in results] == [(True, 4)]

    with lab.inside():
        run(main())
    # Sent is not yet read: on a busy machine socat may not have run since (and a
    # stop kills it). The link keeps the order, so "wid" comes last.
    listener.wait_for(b"wid")
    assert listener.lines() == [b"array", b"wid"]


# -- item 7: a tight send loop yields ------------------------------------------------------


@pytest.mark.parametrize("method", ["send_all", "send"])
def test_a_tight_send_loop_lets_other_tasks_run(lab: Lab, method: str) -> None:
    sends = 1200

    async def main() -> tuple[int, int, list[bool]]:
        async with MulticastEndpoint(GROUP, PORT, watch=False, loopback=True) as ep:
            sub = ep.subscribe(queue_size=4 * sends)
            ticks = 0
            done = False

            async def other() -> None:
                nonlocal ticks
                while not done:
                    ticks += 1
                    await asyncio.sleep(0)

            task = asyncio.create_task(other())
            await asyncio.sleep(0)
            ticks = 0
            oks: list[bool] = []
            received_during = 0
            for n in range(sends):
                if method == "send_all":
                    oks.extend(r.ok for r in await ep.send_all(b"%d" % n))
                else:
                    oks.append((await ep.send(b"%d" % n, interface="eth1")).ok)
                if n == sends - 1:
                    received_during = sub.queued
            done = True
            await task
            return ticks, received_during, oks

    with lab.inside():
        ticks, received, oks = run(main())
    copies = len(oks)
    # The other task ran at least once per ~256 copies, and the readers did too:
    # without yields neither would have run before the loop ended.
    assert ticks >= copies // 256 - 1, ticks
    assert received > 0
    assert all(oks)
