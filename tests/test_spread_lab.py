"""Joins past the per-socket cap, on a real kernel: each join tries one socket, not all.

With ``igmp_max_memberships`` at 2 and 6 links, the memberships spread over three
receive sockets. A join tries only the socket that still has room, so 6 links
cost 6 joins plus one refusal per socket filled; trying every full socket first
(as before) costs 1 + 2 + ... more. A leave makes room again, and the next join
goes there instead of opening a fourth socket.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from mcastio import MulticastEndpoint
from mcastio._platform.linux import receiver
from mcastio.testing import Lab
from tests.conftest import module_lab, run, wait_for

pytestmark = pytest.mark.lab

GROUP = "239.255.44.1"
PORT = 5044


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    yield from module_lab(links=6, ipv6=False, sysctls={"net.ipv4.igmp_max_memberships": "2"})


def test_joins_past_the_cap_try_only_a_socket_with_room(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts: list[int] = []
    real_join = receiver.join

    def counted(sock: Any, *args: Any) -> None:
        attempts.append(sock.fileno())
        real_join(sock, *args)

    monkeypatch.setattr(receiver, "join", counted)
    eth0 = lab.link[0]

    async def main() -> tuple[int, int, int, int]:
        async with MulticastEndpoint(GROUP, PORT, keepalive=False) as ep:
            at_start = len(attempts)
            sockets = len(ep._engine.memberships.sockets)
            # eth0 holds its membership on the first socket: unplug it, plug it back.
            attempts.clear()
            lab.remove_link(eth0)
            await wait_for(lambda: len(ep.interfaces) == 5, what="eth0 gone")
            lab.recreate_link(eth0)
            await wait_for(lambda: len(ep.interfaces) == 6, what="eth0 back")
            await asyncio.sleep(0)
            return at_start, sockets, len(attempts), len(ep._engine.memberships.sockets)

    with lab.inside():
        at_start, sockets, rejoin, sockets_after = run(main())
    assert sockets == 3
    # Six joins, and one refusal on each of the two sockets that filled up.
    assert at_start == 6 + 2
    # Back on the socket the leave made room on, no fourth socket: one refusal on
    # the newest socket (full, but not yet known to be), then the join.
    assert (rejoin, sockets_after) == (2, 3)
