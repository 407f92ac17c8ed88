"""One host monitor per event loop, on a real kernel: endpoints share the watching.

Two endpoints in one loop use one netlink socket and one watcher task; a link
removed and re-created is followed by both; the one left open after the other
closes still follows changes, sends and receives; the last one stops the watching.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator

import pytest

from mcastio import Datagram, HostMonitorState, MulticastEndpoint, Subscription
from mcastio.testing import Lab
from tests.conftest import module_lab, run, wait_for

pytestmark = pytest.mark.lab

GROUP_A = "239.255.43.1"
GROUP_B = "239.255.43.2"
PORT = 5043


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    yield from module_lab(links=2, ipv6=False)


def netlink_sockets() -> int:
    """The netlink sockets this process holds."""
    with open("/proc/self/net/netlink", encoding="ascii") as f:
        inodes = {line.split()[9] for line in f.read().splitlines()[1:]}
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            count += 1
    return count


async def next_from(sub: Subscription, payload: bytes) -> Datagram:
    while True:
        dgram = await asyncio.wait_for(sub.__anext__(), 3)
        if dgram.data == payload:
            return dgram


def test_endpoints_of_one_loop_share_one_monitor(lab: Lab) -> None:
    eth1 = lab.link[1]

    async def main() -> tuple[HostMonitorState | None, ...]:
        before = netlink_sockets()
        a = MulticastEndpoint(GROUP_A, PORT, keepalive=False)
        b = MulticastEndpoint(GROUP_B, PORT, keepalive=False)
        await asyncio.gather(a.start(), b.start())
        try:
            both = a.host_monitor
            assert both == b.host_monitor
            # One subscription for the whole loop, not one per endpoint.
            assert netlink_sockets() - before == 1
            # The answers to the start's link dump are not a change: no round for them.
            await asyncio.sleep(0.1)
            quiet = a.host_monitor
            assert quiet is not None
            assert quiet.rounds == 0
            # A link unplugged and re-plugged (a new index) is followed by both.
            lab.remove_link(eth1)
            await wait_for(lambda: len(a.interfaces) == len(b.interfaces) == 1, what="gone")
            lab.recreate_link(eth1)
            await wait_for(lambda: len(a.interfaces) == len(b.interfaces) == 2, what="back")
            after_flap = a.host_monitor
            await a.aclose()
            # b still follows, sends and receives on its own.
            left = b.host_monitor
            sub = b.subscribe()
            lab.peer_send(eth1, GROUP_B, PORT, b"b-after\n")
            assert (await next_from(sub, b"b-after\n")).interface == eth1.host_if
            assert all(r.ok for r in await b.send_all(b"out\n"))
            lab.sh(lab.host, f"ip addr add 10.200.1.9/24 dev {eth1.host_if}")

            def has_new_address() -> bool:
                iface = next(i for i in b.interfaces if i.name == eth1.host_if)
                return "10.200.1.9" in iface.addresses(socket.AF_INET)

            await wait_for(has_new_address, what="the new address")
            lab.sh(lab.host, f"ip addr del 10.200.1.9/24 dev {eth1.host_if}")
        finally:
            await a.aclose()
            await b.aclose()
        assert netlink_sockets() == before
        return both, after_flap, left, b.host_monitor

    with lab.inside():
        both, after_flap, left, closed = run(main())
    assert both is not None
    assert (both.endpoints, both.mode) == (2, "netlink")
    assert after_flap is not None
    assert after_flap.notifications > 0
    assert after_flap.rounds >= 2
    assert left is not None
    assert (left.endpoints, left.mode) == (1, "netlink")
    assert closed is None


def test_a_failing_endpoint_does_not_stop_the_others(lab: Lab) -> None:
    eth1 = lab.link[1]
    reported: list[object] = []

    def broken(iface: object) -> bool:
        if getattr(iface, "name", "") == "eth1" and len(getattr(iface, "ipv4", ())) > 1:
            raise RuntimeError("application bug in the selector")
        return True

    async def main() -> tuple[str, str, int]:
        asyncio.get_running_loop().set_exception_handler(
            lambda _loop, ctx: reported.append(ctx.get("exception"))
        )
        async with (
            MulticastEndpoint(GROUP_A, PORT, interfaces=broken, keepalive=False) as bad,
            MulticastEndpoint(GROUP_B, PORT, keepalive=False) as good,
        ):
            lab.sh(lab.host, f"ip addr add 10.200.1.8/24 dev {eth1.host_if}")
            try:
                await wait_for(lambda: bad.watch_mode == "stopped", what="the bug reported")

                def has_new_address() -> bool:
                    iface = next(i for i in good.interfaces if i.name == eth1.host_if)
                    return "10.200.1.8" in iface.addresses(socket.AF_INET)

                await wait_for(has_new_address, what="the other endpoint following")
            finally:
                lab.sh(lab.host, f"ip addr del 10.200.1.8/24 dev {eth1.host_if}")
            state = good.host_monitor
            assert state is not None
            return bad.watch_mode, good.watch_mode, state.endpoints

    with lab.inside():
        bad_mode, good_mode, sharing = run(main())
    assert (bad_mode, good_mode, sharing) == ("stopped", "netlink", 1)
    assert any(isinstance(exc, RuntimeError) for exc in reported)


def test_starts_take_turns_and_can_be_closed_midway(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mcastio import EndpointClosedError, _turns

    # Every slice used up at once: each start waits for the loop after every link.
    monkeypatch.setattr(_turns, "SLICE", 0.0)

    async def main() -> tuple[list[str], int, int]:
        order: list[str] = []
        a = MulticastEndpoint(GROUP_A, PORT, keepalive=False)
        b = MulticastEndpoint(GROUP_B, PORT, keepalive=False)

        async def start(name: str, ep: MulticastEndpoint) -> None:
            await ep.start()
            order.append(name)

        async def tick() -> None:
            # Runs while the starts are under way, not after both.
            await asyncio.sleep(0)
            order.append("tick")

        await asyncio.gather(start("a", a), start("b", b), tick(), a.start())
        joined = len(a.interfaces) + len(b.interfaces)
        await a.aclose()
        await b.aclose()
        # Closed while it starts: the start fails, nothing stays open.
        c = MulticastEndpoint(GROUP_A, PORT, keepalive=False)
        task = asyncio.get_running_loop().create_task(c.start())
        await asyncio.sleep(0)
        await c.aclose()
        with pytest.raises(EndpointClosedError):
            await task
        return order, joined, len(c.interfaces)

    with lab.inside():
        order, joined, left = run(main())
    assert order.index("tick") < order.index("a")
    assert sorted(order) == ["a", "b", "tick"]
    assert (joined, left) == (4, 0)
