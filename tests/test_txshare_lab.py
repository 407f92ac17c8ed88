"""Transmit sockets shared in one event loop, on a real kernel.

Endpoints in "group" source-port mode read nothing on their transmit sockets, so
two of them on one interface send through one socket; an endpoint on a port of
its own keeps its sockets, and the replies to them reach it and no other. The one
left open after the other closes still sends and receives; a link removed and
re-created gets one new socket for both; the last close closes it.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Iterator

import pytest

from mcastio import Datagram, MulticastEndpoint
from mcastio._txsocket import shared_sockets
from mcastio.testing import Lab, Link
from tests.conftest import module_lab, run, wait_for

pytestmark = pytest.mark.lab

GROUP_A = "239.255.44.1"
GROUP_B = "239.255.44.2"
PORT = 5044


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    yield from module_lab(links=2, ipv6=False)


def responder(lab: Lab, link: Link) -> socket.socket:
    """A socket in ``link``'s peer that hears both groups on PORT."""
    with lab.inside(link.peer_ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        index = socket.if_nametoindex(link.peer_if)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("0.0.0.0", PORT))
    for group in (GROUP_A, GROUP_B):
        mreq = struct.pack("=4s4si", socket.inet_aton(group), bytes(4), index)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    sock.settimeout(3.0)
    return sock


def heard(sock: socket.socket, payload: bytes) -> tuple[str, int]:
    """The source of the first datagram ``payload`` that reaches ``sock``."""
    while True:
        data, (host, port) = sock.recvfrom(2048)
        if data == payload:
            return str(host), int(port)


async def collect(ep: MulticastEndpoint, into: list[Datagram]) -> None:
    async for dgram in ep.subscribe():
        into.append(dgram)


def test_group_mode_endpoints_share_and_replies_stay_with_their_endpoint(lab: Lab) -> None:
    link0, _link1 = lab.link
    peer = responder(lab, link0)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        a = MulticastEndpoint(GROUP_A, PORT, source_port="group", keepalive=False)
        b = MulticastEndpoint(GROUP_B, PORT, source_port="group", keepalive=False)
        c = MulticastEndpoint(GROUP_A, PORT, keepalive=False)  # a port of its own
        await asyncio.gather(a.start(), b.start(), c.start())
        got: dict[str, list[Datagram]] = {"a": [], "b": [], "c": []}
        tasks = [
            asyncio.ensure_future(collect(ep, got[k]))
            for k, ep in zip("abc", (a, b, c), strict=True)
        ]
        try:
            shared = a._engine.tx.sockets
            assert len(shared) == 2
            assert b._engine.tx.sockets == shared  # the very same sockets
            assert [tx.users for tx in shared] == [2, 2]
            assert not set(c._engine.tx.sockets) & set(shared)
            assert len(shared_sockets(loop)) == 2

            # Both leave from the group's port, each to its own group.
            assert all(r.ok for r in await a.send_all(b"from-a\n"))
            assert all(r.ok for r in await b.send_all(b"from-b\n"))
            assert heard(peer, b"from-a\n") == (link0.host_addr, PORT)
            assert heard(peer, b"from-b\n") == (link0.host_addr, PORT)

            # A unicast answer to c's request reaches c, and neither a nor b.
            await c.send_all(b"query\n")
            source = heard(peer, b"query\n")
            assert source[1] != PORT
            peer.sendto(b"answer\n", source)
            await wait_for(lambda: any(d.data == b"answer\n" for d in got["c"]), what="answer")
            (answer,) = [d for d in got["c"] if d.data == b"answer\n"]
            assert (answer.group, answer.interface) == (None, link0.host_if)

            # a closes: b's sockets stay open, and b still sends and receives.
            await a.aclose()
            assert b._engine.tx.sockets == shared
            assert [tx.users for tx in shared] == [1, 1]
            assert all(tx.sock.fileno() != -1 for tx in shared)
            assert all(r.ok for r in await b.send_all(b"b-alone\n"))
            assert heard(peer, b"b-alone\n") == (link0.host_addr, PORT)
            lab.peer_send(link0, GROUP_B, PORT, b"to-b\n")
            await wait_for(lambda: any(d.data == b"to-b\n" for d in got["b"]), what="to-b")
            # Nothing of it all went anywhere else.
            assert not [d for d in got["a"] + got["b"] if d.data == b"answer\n"]
            assert [d.data for d in got["c"] if d.group is None] == [b"answer\n"]
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for ep in (a, b, c):
                await ep.aclose()
        assert all(tx.sock.fileno() == -1 for tx in shared)
        assert len(shared_sockets(loop)) == 0

    try:
        with lab.inside():
            run(main())
    finally:
        peer.close()


def test_a_link_removed_and_recreated_gets_one_new_socket_for_both(lab: Lab) -> None:
    link1 = lab.link[1]

    async def main() -> None:
        loop = asyncio.get_running_loop()
        a = MulticastEndpoint(GROUP_A, PORT, source_port="group", keepalive=False)
        b = MulticastEndpoint(GROUP_B, PORT, source_port="group", keepalive=False)
        await asyncio.gather(a.start(), b.start())
        try:
            (old,) = [s.tx for s in a._engine.tx._view if s.iface.name == link1.host_if]
            lab.remove_link(link1)
            await wait_for(lambda: len(a.interfaces) == len(b.interfaces) == 1, what="gone")
            assert old.sock.fileno() == -1  # closed with its last user
            assert len(shared_sockets(loop)) == 1
            lab.recreate_link(link1)
            await wait_for(lambda: len(a.interfaces) == len(b.interfaces) == 2, what="back")
            assert a._engine.tx.sockets == b._engine.tx.sockets
            assert [tx.users for tx in a._engine.tx.sockets] == [2, 2]
            assert len(shared_sockets(loop)) == 2
            peer = responder(lab, lab.link[1])
            try:
                for ep, payload in ((a, b"a-back\n"), (b, b"b-back\n")):
                    results = {r.interface: r for r in await ep.send_all(payload)}
                    assert results[link1.host_if].ok
                    assert heard(peer, payload)[1] == PORT
            finally:
                peer.close()
        finally:
            await a.aclose()
            await b.aclose()
        assert len(shared_sockets(loop)) == 0

    with lab.inside():
        run(main())


def test_a_send_waiting_on_a_shared_socket_ends_when_its_endpoint_closes(lab: Lab) -> None:
    # A slow link fills the shared socket; one endpoint's send waits for room, then
    # the endpoint closes. Its copy must not leave later through the socket the
    # other endpoint keeps.
    lab.sh(lab.host, "tc qdisc replace dev eth0 root tbf rate 64kbit burst 1540 limit 5000000")

    async def main() -> tuple[bool, bool]:
        def endpoint(group: str) -> MulticastEndpoint:
            return MulticastEndpoint(
                group, 44270, source_port="group", join=False, interfaces=["eth0"]
            )

        async with endpoint("239.255.27.1") as a, endpoint("239.255.27.2") as b:
            [shared] = a._engine.tx.sockets
            assert b._engine.tx.sockets == (shared,)
            shared.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            payload = b"x" * 1400
            for _ in range(2000):
                if isinstance(a.send_all_nowait(payload)[0].error, BlockingIOError):
                    break
            else:
                raise AssertionError("the socket never filled")
            waiting = asyncio.ensure_future(a.send_all(payload))
            await asyncio.sleep(0.01)
            was_waiting = not waiting.done()
            await a.aclose()
            [result] = await waiting
            return was_waiting, result.error is not None

    try:
        with lab.inside():
            was_waiting, refused = run(main())
    finally:
        lab.sh(lab.host, "tc qdisc del dev eth0 root", check=False)
    assert was_waiting
    assert refused, "a closed endpoint's copy went out through the shared socket"


@pytest.mark.linux_profile(
    reason="one pinned socket for every link; the portable profile's socket per interface "
    "is tested in tests/test_portable_send_lab.py"
)
def test_a_port_of_its_own_is_one_socket_for_every_link_and_replies_find_their_asker(
    lab: Lab,
) -> None:
    link1 = lab.link[1]
    peers = [responder(lab, link) for link in lab.link]

    async def main() -> None:
        # The same group and responder for both: only the port tells their replies apart.
        a = MulticastEndpoint(GROUP_A, PORT, keepalive=False)
        b = MulticastEndpoint(GROUP_A, PORT, keepalive=False)
        await asyncio.gather(a.start(), b.start())
        got: dict[str, list[Datagram]] = {"a": [], "b": []}
        tasks = [asyncio.ensure_future(collect(ep, got[k])) for k, ep in (("a", a), ("b", b))]
        try:
            (tx_a,), (tx_b,) = a._engine.tx.sockets, b._engine.tx.sockets
            assert tx_a is not tx_b
            assert tx_a.users == tx_b.users == 2
            port_a, port_b = tx_a.sock.getsockname()[1], tx_b.sock.getsockname()[1]
            for ep, name, port in ((a, b"a", port_a), (b, b"b", port_b)):
                assert all(r.ok for r in await ep.send_all(b"query-" + name))
                # One copy out of each link, from that link's address and the one port.
                for link, peer in zip(lab.link, peers, strict=True):
                    source = heard(peer, b"query-" + name)
                    assert source == (link.host_addr, port)
                    peer.sendto(b"answer-" + name + link.host_if.encode(), source)
            want = {
                k: sorted(
                    (b"answer-" + k.encode() + lk.host_if.encode(), lk.host_if) for lk in lab.link
                )
                for k in "ab"
            }

            def answers(k: str) -> list[tuple[bytes, str]]:
                return sorted((d.data, d.interface) for d in got[k] if d.group is None)

            await wait_for(
                lambda: answers("a") == want["a"] and answers("b") == want["b"], what="answers"
            )

            # link1 goes and comes back: the socket (and its port) stays, link1 is used again.
            lab.remove_link(link1)
            await wait_for(lambda: len(a.interfaces) == 1, what="gone")
            assert a._engine.tx.sockets == (tx_a,)
            assert tx_a.users == 1
            lab.recreate_link(link1)
            await wait_for(lambda: len(a.interfaces) == 2, what="back")
            assert a._engine.tx.sockets == (tx_a,)
            assert tx_a.users == 2
            peer1 = responder(lab, lab.link[1])
            try:
                results = {r.interface: r for r in await a.send_all(b"again")}
                assert results[link1.host_if].ok
                assert heard(peer1, b"again") == (lab.link[1].host_addr, port_a)
            finally:
                peer1.close()

            # a closes: its socket with it; b's stays, and b still asks and hears.
            await a.aclose()
            assert tx_a.sock.fileno() == -1
            assert all(r.ok for r in await b.send_all(b"b-alone"))
            source = heard(peers[0], b"b-alone")
            peers[0].sendto(b"late", source)
            await wait_for(lambda: any(d.data == b"late" for d in got["b"]), what="late")
            assert not [d for d in got["a"] if d.data in (b"late", b"answer-b")]
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for ep in (a, b):
                await ep.aclose()
        assert tx_b.sock.fileno() == -1

    try:
        with lab.inside():
            run(main())
    finally:
        for peer in peers:
            peer.close()
