"""The keeper's cost at scale: 100 groups on 16 links, every keeper refreshing.

Each refresh used to read and parse all of /proc/net/igmp once per interface, and
every endpoint had a raw socket of its own: the cost grew with every membership on
the host, and a query flood was parsed once per endpoint. Now every keeper on the
loop shares one raw socket per family, and /proc/net/igmp is read at most twice a
second for all of them, its device lines only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator

import pytest

from mcastio import MulticastEndpoint
from mcastio.testing import Lab
from tests.conftest import run

pytestmark = pytest.mark.lab

GROUPS = 100
LINKS = 16
KEEPALIVE = 0.5


def raw_sockets() -> int:
    """Raw IGMP sockets this process holds (the inode of each fd in /proc/net/raw)."""
    inodes = set()
    with open("/proc/net/raw") as f:
        for line in f.read().splitlines()[1:]:
            parts = line.split()
            # local_address is "00000000:0002": protocol 2 is IGMP.
            if parts[1].endswith(":0002"):
                inodes.add(parts[9])
    mine = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            mine += target.startswith("socket:[") and target[8:-1] in inodes
    return mine


def igmp_memberships() -> int:
    with open("/proc/net/igmp") as f:
        return sum(1 for line in f if line.startswith("\t\t"))


@contextlib.asynccontextmanager
async def endpoints(names: list[str]) -> AsyncIterator[list[MulticastEndpoint]]:
    async with contextlib.AsyncExitStack() as stack:
        eps = [
            await stack.enter_async_context(
                MulticastEndpoint(
                    f"239.255.{23 + i // 250}.{i % 250 + 1}",
                    42400,
                    interfaces=names,
                    keepalive=KEEPALIVE,
                    loopback=False,
                )
            )
            for i in range(GROUPS)
        ]
        yield eps


async def measure(names: list[str]) -> tuple[float, int, int, int]:
    """(longest event-loop stall in s, refreshes made, raw IGMP sockets, memberships)."""
    loop = asyncio.get_running_loop()
    async with endpoints(names) as eps:
        # The interface watchers' start-up after 100 opens stalls the loop ~0.2 s
        # with keepalive off too: not the keeper's cost, so not measured.
        await asyncio.sleep(0.5)
        worst = 0.0
        end = loop.time() + 3 * KEEPALIVE
        while loop.time() < end:
            before = loop.time()
            await asyncio.sleep(0.001)
            worst = max(worst, loop.time() - before - 0.001)
        refreshes = sum(s.refreshes for ep in eps for s in ep.keepalive_state)
        held = raw_sockets()
        memberships = igmp_memberships()
    return worst, refreshes, held, memberships


def settle(lab: Lab, names: list[str]) -> None:
    """Until every link is operationally up: linkwatch says so up to ~1 s late, and
    each change wakes all 100 endpoints' interface watchers (not the keeper's cost)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = lab.run(lab.host, "ip", "-br", "link", "show").stdout.splitlines()
        states = {line.split()[0].partition("@")[0]: line.split()[1] for line in lines}
        if all(states.get(name) == "UP" for name in names):
            return
        time.sleep(0.05)


def test_keepers_of_100_groups_on_16_links_share_one_raw_socket_and_do_not_stall_the_loop(
    make_lab: object,
) -> None:
    assert callable(make_lab)
    lab: Lab = make_lab(
        links=LINKS,
        ipv6=False,
        sysctls={
            "net.ipv4.igmp_max_memberships": "64",
            # No IPv6 link-local addresses turning up after DAD, waking the watchers.
            "net.ipv6.conf.default.disable_ipv6": "1",
            "net.ipv6.conf.all.disable_ipv6": "1",
        },
    )
    names = [link.host_if for link in lab.link]
    settle(lab, names)
    with lab.inside():
        worst, refreshes, held, memberships = run(measure(names), timeout=60)
    print(
        f"{GROUPS} groups x {LINKS} links: longest loop stall {worst * 1000:.1f} ms, "
        f"{refreshes} refreshes in {3 * KEEPALIVE:g} s, {held} raw IGMP socket(s); "
        f"{memberships} memberships on the host"
    )
    # Every keeper refreshed every link at least 3 times (due every 0.5 s, 2 s).
    assert refreshes >= GROUPS * LINKS * 3
    assert held == 1
    # 3-12 ms on a quiet machine, 3-12 ms with keepalive off too, tens of ms under
    # load (docs/explanation/hostile-traffic.md); the bound leaves room for a busy CI machine and
    # still fails the old cost (the loop fell 132 s behind).
    assert worst < 0.5, f"the loop stalled {worst * 1000:.0f} ms"
