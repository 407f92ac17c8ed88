"""What the receive path reports beyond the payload: TTL / hop limit and kernel drops."""

from __future__ import annotations

import asyncio
import socket

import pytest

import mcastio
from mcastio.testing import Lab, Link
from tests.conftest import run

# Every test runs with each receive drain (compiled, recvmmsg and recvmsg).
pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("receive_drain")]

GROUP4 = "239.255.12.1"
GROUP6 = "ff05::1:12"
PORT = 5720


def peer_socket(lab: Lab, link: Link, family: socket.AddressFamily, hops: int) -> socket.socket:
    with lab.inside(link.peer_ns):
        sock = socket.socket(family, socket.SOCK_DGRAM)
    if family == socket.AF_INET:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(link.peer_addr))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, hops)
    else:
        with lab.inside(link.peer_ns):
            index = socket.if_nametoindex(link.peer_if)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, hops)
    return sock


async def take(sub: mcastio.Subscription, count: int) -> list[mcastio.Datagram]:
    got: list[mcastio.Datagram] = []
    async for dgram in sub:
        got.append(dgram)
        if len(got) == count:
            break
    return got


@pytest.mark.parametrize(("group", "family"), [(GROUP4, socket.AF_INET), (GROUP6, socket.AF_INET6)])
@pytest.mark.linux_profile(
    reason="the TTL comes from a control message the portable path does not read"
)
def test_receive_ttl_reports_the_ttl_or_hop_limit_per_datagram(
    lab: Lab, group: str, family: socket.AddressFamily
) -> None:
    if family == socket.AF_INET6:
        lab.wait_ipv6_ready(lab.link)

    async def main() -> dict[str, int | None]:
        with_ttl = mcastio.MulticastEndpoint(group, PORT, receive_ttl=True, watch=False)
        plain = mcastio.MulticastEndpoint(group, PORT, watch=False)
        async with with_ttl, plain:
            sub, plain_sub = with_ttl.subscribe(), plain.subscribe()
            for hops, link in zip((3, 7, 200), lab.link, strict=True):
                with peer_socket(lab, link, family, hops) as sock:
                    sock.sendto(b"x", (group, PORT))
            got = await asyncio.wait_for(take(sub, 3), 3)
            plain_got = await asyncio.wait_for(take(plain_sub, 3), 3)
        assert {d.ttl for d in plain_got} == {None}
        return {d.interface: d.ttl for d in got}

    with lab.inside():
        got = run(main())
    assert got == {"eth0": 3, "eth1": 7, "eth2": 200}


def test_kernel_drops_on_a_full_buffer_are_counted(lab: Lab) -> None:
    link = lab.link[1]
    burst = 400

    async def main() -> mcastio.EndpointStats:
        ep = mcastio.MulticastEndpoint(
            GROUP4, PORT, interfaces=[link.host_if], receive_buffer=1, watch=False
        )
        async with ep:
            sub = ep.subscribe(queue_size=burst + 10)
            with peer_socket(lab, link, socket.AF_INET, 1) as sock:
                # No await between the sends: the endpoint cannot read, the buffer overflows.
                for _ in range(burst):
                    sock.sendto(b"y" * 1000, (GROUP4, PORT))
                await asyncio.sleep(0.2)
                # Exact at once (SO_MEMINFO), not only after a later datagram.
                early = ep.stats
                assert early.received > 0
                assert early.received + early.kernel_dropped == burst
                sock.sendto(b"last", (GROUP4, PORT))
                await asyncio.sleep(0.2)
            stats = ep.stats
            assert sub.queued == stats.received
        return stats

    with lab.inside():
        stats = run(main())
    assert stats.kernel_dropped > 0
    assert stats.received + stats.kernel_dropped == burst + 1
    assert stats.dropped == 0
