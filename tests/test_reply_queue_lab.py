"""A unicast flood to a transmit port costs no group datagram, and replies can be off.

The peer learns the transmit socket's port from the endpoint's request on the
group (as any host on the link can), then for one second sends the group stream
at 200 datagrams/s and unicast to that port at 20,000/s, interleaved. The
subscriber reads at most 20 datagrams every 5 ms. Replies queue apart from group
traffic, so every group datagram reaches it; before, the replies filled the one
queue and pushed the group datagrams out (the issue measured 8 to 16 of 200 a second).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator

import pytest

from mcastio import EndpointStats, MulticastEndpoint
from mcastio.testing import Lab, lab_support
from tests.conftest import require, run

pytestmark = pytest.mark.lab

GROUP, PORT = "239.255.23.12", 42312
STREAM, FLOOD = 200, 20_000

_PEER = r"""
import socket, struct, sys, time
group, dev = sys.argv[1], sys.argv[3]
port, stream, flood = int(sys.argv[2]), int(sys.argv[4]), int(sys.argv[5])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("", port))
index = socket.if_nametoindex(dev)
mreq = struct.pack("4s4si", socket.inet_aton(group), bytes(4), index)
s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
print("ready", flush=True)
_, (host, tx_port) = s.recvfrom(2048)
out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
mreqn = struct.pack("4s4si", bytes(4), bytes(4), index)
out.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
out.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
per_tick = flood // stream
start = time.monotonic()
for i in range(stream):
    out.sendto(b"group %04d" % i, (group, port))
    for j in range(per_tick):
        out.sendto(b"reply" + bytes(100), (host, tx_port))
    # 5 ms per tick, against the clock: a late tick catches up.
    delay = start + (i + 1) / stream - time.monotonic()
    if delay > 0:
        time.sleep(delay)
print("done", flush=True)
"""


@pytest.fixture(scope="module")
def flood_lab() -> Iterator[Lab]:
    require(lab_support())
    lab = Lab(links=1, ipv6=False)
    lab.build()
    try:
        yield lab
    finally:
        lab.destroy()


def flooded(lab: Lab, *, take_replies: bool = True) -> tuple[int, int, EndpointStats, int]:
    """(group datagrams read, replies read, stats, replies the subscription dropped)."""
    link = lab.link[0]
    peer = lab.popen(
        link.peer_ns, sys.executable, "-c", _PEER, GROUP, str(PORT), link.peer_if,
        str(STREAM), str(FLOOD), stdout=subprocess.PIPE,
    )  # fmt: skip
    assert peer.stdout is not None
    assert peer.stdout.readline() == b"ready\n"

    async def main() -> tuple[int, int, EndpointStats, int]:
        async with MulticastEndpoint(
            GROUP,
            PORT,
            interfaces=[link.host_if],
            keepalive=False,
            queue_size=256,
            replies=take_replies,
        ) as ep:
            sub = ep.subscribe()
            groups = replies = 0
            await ep.send_all(b"who is there?")
            loop = asyncio.get_running_loop()
            done = loop.run_in_executor(None, peer.stdout.readline)  # type: ignore[union-attr]
            # A consumer slower than the flood: at most 20 datagrams every 5 ms.
            while True:
                try:
                    batch = await asyncio.wait_for(sub.get_batch(20), 0.5)
                except asyncio.TimeoutError:
                    break
                groups += sum(d.group is not None for d in batch)
                replies += sum(d.group is None for d in batch)
                await asyncio.sleep(0.005)
            assert await done == b"done\n"
            return groups, replies, ep.stats, getattr(sub, "replies_dropped", -1)

    try:
        with lab.inside():
            return run(main())
    finally:
        try:
            peer.wait(timeout=10)
        except subprocess.TimeoutExpired:
            # The endpoint failed before its request: the peer still waits for it.
            peer.kill()
        peer.communicate(timeout=5)


def test_a_reply_flood_costs_no_group_datagram(flood_lab: Lab) -> None:
    groups, replies, stats, dropped = flooded(flood_lab)
    print(
        f"group {groups}/{STREAM}, replies read {replies}, delivered {stats.replies}, "
        f"dropped from the reply queue {dropped}, kernel dropped {stats.kernel_dropped}"
    )
    # Before: the replies pushed the group datagrams out of the one shared queue.
    assert groups == STREAM
    # The premise: the flood did overrun the subscriber, and only replies paid.
    assert dropped > 0
    assert stats.dropped == dropped


def test_replies_off_are_never_read_and_are_counted(flood_lab: Lab) -> None:
    groups, replies, stats, _ = flooded(flood_lab, take_replies=False)
    print(
        f"replies=False: group {groups}/{STREAM}, replies read {replies}, "
        f"refused {stats.replies_refused}, kernel dropped {stats.kernel_dropped}"
    )
    assert groups == STREAM
    assert replies == 0
    assert stats.replies == 0
    # Every reply was discarded by the kernel and counted (a few may die in the veth
    # backlog before they reach the socket).
    assert FLOOD * 0.95 <= stats.replies_refused <= FLOOD
    assert stats.kernel_dropped == 0
    assert stats.dropped == 0
