"""send_to and answer on the real kernel: from the right socket, port and address, or refused.

One lab for the module. Each peer runs a plain socket on its link: it receives
the endpoint's copies, queries the group, replies to a copy, and records where
every answer came from. The results per mode and family are printed (``-s``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
from collections.abc import Iterator

import pytest

import mcastio
from mcastio.testing import Lab, Link, lab_support
from tests.conftest import require, run, wait_for

pytestmark = pytest.mark.lab

GROUP4, GROUP6 = "239.255.33.1", "ff02::1:33"
PORT = 5733


@pytest.fixture(scope="module")
def lab3() -> Iterator[Lab]:
    require(lab_support())
    with Lab(links=3) as lab:
        yield lab


def peer_socket(
    lab: Lab, link: Link, family: socket.AddressFamily, group: str, port: int = 0
) -> socket.socket:
    """A peer's socket sending to ``group`` on its link; with ``port``, bound there and joined."""
    with lab.inside(link.peer_ns):
        sock = socket.socket(family, socket.SOCK_DGRAM)
        index = socket.if_nametoindex(link.peer_if)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET:
        sock.bind(("0.0.0.0", port))
        if port:
            mreq = struct.pack("=4s4si", socket.inet_aton(group), bytes(4), index)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(link.peer_addr))
    else:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(("::", port))
        if port:
            mreq6 = socket.inet_pton(family, group) + struct.pack("=I", index)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq6)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
    sock.settimeout(3.0)
    return sock


def recv_from(sock: socket.socket, prefix: bytes) -> tuple[bytes, tuple[str, int]]:
    """The next datagram starting with ``prefix`` (the peer's own looped queries are skipped)."""
    while True:
        data, source = sock.recvfrom(2048)
        if data.startswith(prefix):
            return data, (source[0], source[1])


async def next_dgram(sub: mcastio.Subscription, prefix: bytes) -> mcastio.Datagram:
    async def first() -> mcastio.Datagram:
        async for dgram in sub:
            if dgram.data.startswith(prefix):
                return dgram
        raise AssertionError("subscription ended")

    return await asyncio.wait_for(first(), 3.0)


def host_link_local(ep: mcastio.MulticastEndpoint, ifname: str) -> ipaddress.IPv6Address:
    (iface,) = (i for i in ep.interfaces if i.name == ifname)
    return next(a.ip for a in iface.ipv6 if a.ip.is_link_local)


@pytest.mark.parametrize("family", ["v4", "v6"])
@pytest.mark.parametrize("source_port", ["ephemeral", "group"])
def test_answers_leave_from_the_transmit_socket_of_the_arrival_link(
    lab3: Lab, source_port: str, family: str
) -> None:
    lab = lab3
    v6 = family == "v6"
    fam, group = (socket.AF_INET6, GROUP6) if v6 else (socket.AF_INET, GROUP4)
    listeners = [peer_socket(lab, link, fam, group, PORT) for link in lab.link]
    peers = [peer_socket(lab, link, fam, group) for link in lab.link]
    seen: dict[str, list[tuple[str, tuple[str, int]]]] = {}

    async def main() -> None:
        async with mcastio.MulticastEndpoint(
            group, PORT, source_port=source_port, watch=False, keepalive=False
        ) as ep:
            sub = ep.subscribe()
            await ep.send_all(b"copy")
            for link, peer, listener in zip(lab.link, peers, listeners, strict=True):
                got = seen[link.host_if] = []
                _, copy_from = await asyncio.to_thread(recv_from, listener, b"copy")
                got.append(("copy", copy_from))
                # 1. A query to the group, answered by unicast to the querier's port.
                peer.sendto(f"query {link.host_if}".encode(), (group, PORT))
                query = await next_dgram(sub, b"query")
                assert (query.interface, query.group) == (link.host_if, group)
                if v6:
                    # The peer's link-local source, scoped to the arrival interface.
                    assert ipaddress.ip_address(query.source[0]).is_link_local
                    assert query.source[-1] == socket.if_nametoindex(link.host_if)
                result = await ep.answer(query, b"answer to query")
                assert (result.interface, result.sent) == (link.host_if, 15)
                _, answer_from = await asyncio.to_thread(recv_from, peer, b"answer to query")
                got.append(("answer", answer_from))
                # 2. A unicast reply to the copy (ephemeral mode: delivered as a reply).
                if source_port == "ephemeral":
                    peer.sendto(b"reply", copy_from)
                    reply = await next_dgram(sub, b"reply")
                    assert (reply.is_reply, reply.interface) == (True, link.host_if)
                    ep.answer_nowait(reply, b"answer to reply")
                    _, again = await asyncio.to_thread(recv_from, peer, b"answer to reply")
                    got.append(("answer-reply", again))
                # 3. send_to the peer's own (global) address on that link.
                await ep.send_to(
                    b"send_to",
                    (link.peer_addr6 if v6 else link.peer_addr) or "",
                    peer.getsockname()[1],
                    interface=link.host_if,
                )
                _, sent_from = await asyncio.to_thread(recv_from, peer, b"send_to")
                got.append(("send_to", sent_from))
                if v6:
                    seen[link.host_if].append(("ll", (str(host_link_local(ep, link.host_if)), 0)))

    try:
        with lab.inside():
            run(main())
    finally:
        for sock in (*peers, *listeners):
            sock.close()
    print(f"\nanswers, {source_port} {family}: {seen}")
    for link in lab.link:
        got = dict(seen[link.host_if])
        copy_addr, copy_port = got["copy"]
        # Every answer leaves from the port the copies leave from: this link's
        # transmit socket, which in group mode is bound to the group's port.
        ports = {port for kind, (_, port) in seen[link.host_if] if kind != "ll"}
        assert ports == {copy_port}
        assert (copy_port == PORT) == (source_port == "group")
        if v6:
            # To a link-local querier from the link-local address of that link.
            assert ipaddress.ip_address(got["answer"][0]) == ipaddress.ip_address(got["ll"][0])
            assert ipaddress.ip_address(got["send_to"][0]) == ipaddress.ip_address(
                link.host_addr6 or ""
            )
        else:
            assert got["answer"][0] == got["send_to"][0] == copy_addr == link.host_addr
        if source_port == "ephemeral":
            assert got["answer-reply"] == got["answer"]


@pytest.mark.parametrize("family", ["v4", "v6"])
def test_off_link_answers_are_refused(lab3: Lab, family: str) -> None:
    lab = lab3
    v6 = family == "v6"
    fam, group = (socket.AF_INET6, GROUP6) if v6 else (socket.AF_INET, GROUP4)
    link = lab.link[1]
    # An address on no prefix of the host's link 1: a querier behind a router.
    stranger = "fd99::7" if v6 else "192.0.2.7"
    nodad = " nodad" if v6 else ""  # usable at once, not tentative
    lab.sh(link.peer_ns, f"ip addr add {stranger}/{128 if v6 else 32} dev {link.peer_if}{nodad}")
    with lab.inside(link.peer_ns):
        sock = socket.socket(fam, socket.SOCK_DGRAM)
    try:
        sock.bind((stranger, 0))
    except OSError:
        sock.close()
        raise
    if v6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, _peer_index(lab, link))
    else:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(stranger))

    async def main() -> None:
        async with mcastio.MulticastEndpoint(group, PORT, watch=False, keepalive=False) as ep:
            sub = ep.subscribe()
            sock.sendto(b"query from afar", (group, PORT))
            query = await next_dgram(sub, b"query from afar")
            assert (query.interface, query.source[0]) == (link.host_if, stranger)
            with pytest.raises(mcastio.NotOnLinkError, match=f"{stranger} is not on eth1"):
                await ep.answer(query, b"no")
            with pytest.raises(mcastio.NotOnLinkError):
                ep.answer_nowait(query, b"no")
            # Link 1's peer is on link 1, not on link 0 (which has the default route).
            peer_addr = (link.peer_addr6 if v6 else link.peer_addr) or ""
            with pytest.raises(mcastio.NotOnLinkError, match="eth0"):
                await ep.send_to(b"no", peer_addr, 9, interface="eth0")

    try:
        with lab.inside():
            run(main())
    finally:
        sock.close()
        lab.sh(link.peer_ns, f"ip addr del {stranger}/{128 if v6 else 32} dev {link.peer_if}")


def _peer_index(lab: Lab, link: Link) -> int:
    with lab.inside(link.peer_ns):
        return socket.if_nametoindex(link.peer_if)


def test_answer_to_a_link_that_went_away_is_refused(lab3: Lab) -> None:
    lab = lab3

    async def main() -> None:
        async with mcastio.DualStackEndpoint(
            GROUP4, GROUP6, PORT, poll_interval=0.05, keepalive=False, require_both=True
        ) as ep:
            assert ep.ipv4 is not None
            assert ep.ipv6 is not None
            v4, v6 = ep.ipv4, ep.ipv6
            link = await asyncio.to_thread(lab.add_link)
            await wait_for(lambda: link.host_if in {i.name for i in v4.interfaces})
            await wait_for(lambda: link.host_if in {i.name for i in v6.interfaces})
            sub = ep.subscribe()
            queries = []
            for fam, group in ((socket.AF_INET, GROUP4), (socket.AF_INET6, GROUP6)):
                peer = peer_socket(lab, link, fam, group)
                with peer:
                    peer.sendto(b"query before unplug", (group, PORT))
                    queries.append(await next_dgram(sub, b"query before unplug"))
                    # Still here: the answer goes out.
                    assert (await ep.answer(queries[-1], b"yes")).ok
            await asyncio.to_thread(lab.remove_link, link)
            lab.link.remove(link)
            await wait_for(lambda: link.host_if not in {i.name for i in v4.interfaces})
            await wait_for(lambda: link.host_if not in {i.name for i in v6.interfaces})
            for query in queries:
                with pytest.raises(mcastio.InterfaceGoneError, match=link.host_if):
                    await ep.answer(query, b"too late")
                with pytest.raises(mcastio.InterfaceGoneError):
                    ep.answer_nowait(query, b"too late")

    with lab.inside():
        run(main())


def test_protocol_transport_and_dual_stack_answer_and_send_to(lab3: Lab) -> None:
    lab = lab3
    link = lab.link[2]
    peers = {
        4: peer_socket(lab, link, socket.AF_INET, GROUP4),
        6: peer_socket(lab, link, socket.AF_INET6, GROUP6),
    }
    results: list[mcastio.SendResult] = []

    class Answering(mcastio.MulticastProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, mcastio.MulticastTransport)
            self.transport = transport

        def multicast_datagram_received(self, dgram: mcastio.Datagram) -> None:
            results.append(self.transport.answer(dgram, b"protocol answer"))

    async def main() -> None:
        transport, _ = await mcastio.create_multicast_endpoint(
            Answering, GROUP4, PORT, watch=False, keepalive=False, source_port="group"
        )
        try:
            peers[4].sendto(b"query", (GROUP4, PORT))
            _, source = await asyncio.to_thread(recv_from, peers[4], b"protocol answer")
            assert source == (link.host_addr, PORT)
            transport.send_to(
                b"transport send_to", (link.peer_addr, peers[4].getsockname()[1]), link.host_if
            )
            _, source = await asyncio.to_thread(recv_from, peers[4], b"transport send_to")
            assert source == (link.host_addr, PORT)
        finally:
            transport.close()
            await transport.endpoint.aclose()
        async with mcastio.DualStackEndpoint(
            GROUP4, GROUP6, PORT, watch=False, keepalive=False, require_both=True
        ) as dual:
            for family, address in ((4, link.peer_addr), (6, link.peer_addr6 or "")):
                port = peers[family].getsockname()[1]
                await dual.send_to(b"dual send_to", address, port, interface=link.host_if)
                _, source = await asyncio.to_thread(recv_from, peers[family], b"dual send_to")
                own = link.host_addr if family == 4 else link.host_addr6
                assert ipaddress.ip_address(source[0]) == ipaddress.ip_address(own or "")

    try:
        with lab.inside():
            run(main())
    finally:
        for sock in peers.values():
            sock.close()
    assert [(r.interface, r.ok) for r in results] == [(link.host_if, True)]
