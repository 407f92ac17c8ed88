"""The portable profile's transmit side (``MCASTIO_PORTABLE=1``) on a real kernel.

A private socket per interface, picked with ``IP_MULTICAST_IF`` (IPv4 by address,
IPv6 by index), no ``SO_BINDTODEVICE``, no pktinfo, one ``sendto`` per copy; each
socket reads the replies to what it sent with ``recvfrom``. These tests prove that
logic on Linux's kernel; they do not prove macOS, FreeBSD or Windows
(docs/explanation/platforms.md).
"""

from __future__ import annotations

import asyncio
import ipaddress
import select
import socket
import struct
from collections.abc import Iterator

import pytest

import mcastio
from mcastio import MulticastEndpoint, MulticastError
from mcastio._platform import PORTABLE_ENV
from mcastio.testing import Lab, Link
from tests.conftest import module_lab, run, wait_for

# No drain takes part in these claims: the pure pass leaves the file out.
pytestmark = [pytest.mark.lab, pytest.mark.one_path]

GROUP4 = "239.255.44.1"
GROUP6 = "ff02::44:1"
GROUP6_SITE = "ff05::44:1"
PORT = 5044
# The fixed source port of the tests that ask for one.
SPORT = 5045
SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    yield from module_lab(links=3)


@pytest.fixture(autouse=True)
def portable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PORTABLE_ENV, "1")


class Peer:
    """A socket in a peer's namespace, joined to the group on its one link."""

    def __init__(self, lab: Lab, link: Link, group: str) -> None:
        self.link = link
        family = socket.AF_INET6 if ":" in group else socket.AF_INET
        with lab.inside(link.peer_ns):
            index = socket.if_nametoindex(link.peer_if)
            self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        packed = ipaddress.ip_address(group).packed
        if family == socket.AF_INET:
            self.sock.bind(("0.0.0.0", PORT))
            mreqn = struct.pack("=4s4si", packed, bytes(4), index)
            self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
        else:
            self.sock.bind(("::", PORT))
            mreq = struct.pack("=16sI", packed, index)
            self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)

    def read_all(self, timeout: float) -> list[tuple[bytes, tuple[str, int]]]:
        """What arrived: waits ``timeout`` for the first, then takes what else is there."""
        got: list[tuple[bytes, tuple[str, int]]] = []
        wait = timeout
        while select.select([self.sock], [], [], wait)[0]:
            data, source = self.sock.recvfrom(2048)
            got.append((data, source))
            # Stragglers (a second copy) would be here within this.
            wait = 0.3
        return got

    def close(self) -> None:
        self.sock.close()


def _family(ep: MulticastEndpoint) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in ep.group else socket.AF_INET


def _sources(ep: MulticastEndpoint, name: str, family: socket.AddressFamily) -> set[str]:
    (iface,) = (i for i in ep.interfaces if i.name == name)
    addrs = iface.ipv4 if family == socket.AF_INET else iface.ipv6
    return {str(a.ip) for a in addrs}


async def _send_and_answer(
    ep: MulticastEndpoint, peers: list[Peer], payload: bytes, sport: int | None = None
) -> dict[str, mcastio.Datagram]:
    """send_all once; each peer answers its copy by unicast; the replies by interface.

    ``sport``: the source port every copy must come from.
    """
    sub = ep.subscribe()
    results = await ep.send_all(payload, group=ep.group)
    assert {r.interface: r.error for r in results} == {p.link.host_if: None for p in peers}
    family = _family(ep)
    for peer in peers:
        got = await asyncio.to_thread(peer.read_all, 5.0)
        # Exactly one copy on each link, from the sending interface's own address.
        assert [data for data, _ in got] == [payload], peer.link.host_if
        source = got[0][1]
        assert source[0].partition("%")[0] in _sources(ep, peer.link.host_if, family)
        if sport is not None:
            assert source[1] == sport, peer.link.host_if
        # The reply goes back where the copy came from: that socket's own port.
        peer.sock.sendto(b"re:" + peer.link.host_if.encode(), source)
    replies: dict[str, mcastio.Datagram] = {}
    while len(replies) < len(peers):
        dgram = await asyncio.wait_for(sub.__anext__(), 5)
        if dgram.group is None:
            replies[dgram.interface] = dgram
    return replies


async def _answered(
    lab: Lab, ep: MulticastEndpoint, payload: bytes, sport: int | None = None
) -> dict[str, mcastio.Datagram]:
    """:func:`_send_and_answer` with a peer on every link, closed after."""
    peers = [Peer(lab, link, ep.group) for link in lab.link]
    try:
        return await _send_and_answer(ep, peers, payload, sport)
    finally:
        for peer in peers:
            peer.close()


@pytest.mark.parametrize("group", [GROUP4, GROUP6])
def test_send_all_reaches_every_link_once_and_replies_reach_the_asker(lab: Lab, group: str) -> None:
    peers = [Peer(lab, link, group) for link in lab.link]

    async def main() -> None:
        names = [link.host_if for link in lab.link]
        async with MulticastEndpoint(group, PORT, interfaces=names, join=False, watch=False) as ep:
            tx = ep._engine.tx
            socks = [s.sock for s in tx.sockets]
            # A socket per interface, each its own port, none tied to a device or
            # reading pktinfo: only what every OS has.
            assert len(socks) == 3
            assert len({s.getsockname()[1] for s in socks}) == 3
            assert sorted(tx.owners.values()) == sorted(names)
            for sock in socks:
                assert sock.getsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, 16).strip(b"\0") == b""
                if sock.family == socket.AF_INET:
                    assert sock.getsockopt(socket.IPPROTO_IP, IP_PKTINFO) == 0
            replies = await _send_and_answer(ep, peers, b"hello")
            assert set(replies) == set(names)
            for peer in peers:
                reply = replies[peer.link.host_if]
                assert reply.data == b"re:" + peer.link.host_if.encode()
                peer_addr = peer.link.peer_addr if ":" not in group else None
                if peer_addr is not None:
                    assert reply.source[0] == peer_addr
                else:
                    assert ipaddress.ip_address(reply.source[0]).is_link_local
            stats = ep.stats
            assert (stats.replies, stats.replies_off_link) == (3, 0)
            # Answered by unicast from that interface's socket: the route picks the
            # device and source (no pktinfo), here the link's own address.
            for peer in peers:
                result = await ep.answer(replies[peer.link.host_if], b"direct")
                assert result.error is None
                got = await asyncio.to_thread(peer.read_all, 5.0)
                assert [data for data, _ in got] == [b"direct"]
                source = got[0][1][0].partition("%")[0]
                assert source in _sources(ep, peer.link.host_if, _family(ep))

    try:
        with lab.inside():
            run(main())
    finally:
        for peer in peers:
            peer.close()


def test_a_reply_from_another_link_is_counted_off_link(lab: Lab) -> None:
    # What differs from the Linux profile: no socket is tied to its device, so unicast
    # to eth1's reply port arriving on eth0 is read there and named eth1, the only
    # interface that socket knows; the on-link check then drops it and counts it.
    used, other = lab.link[1], lab.link[0]
    flood = 20

    async def main() -> mcastio.EndpointStats:
        async with MulticastEndpoint(
            GROUP4, PORT, interfaces=[used.host_if], join=False, watch=False
        ) as ep:
            (tx,) = (s.sock for s in ep._engine.tx.sockets)
            with lab.inside(other.peer_ns):
                flooder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            with flooder:
                for _ in range(flood):
                    flooder.sendto(b"x", (used.host_addr, tx.getsockname()[1]))
            await wait_for(lambda: ep.stats.replies_off_link == flood, what="flood read")
            return ep.stats

    with lab.inside():
        stats = run(main())
    assert (stats.replies, stats.replies_off_link) == (0, flood)


# -- a fixed source port (source_port=N) --------------------------------------------


def _bound(ep: MulticastEndpoint) -> dict[str, tuple[str, int]]:
    """Each interface's transmit socket: (its bound address, port)."""
    return {name: sock.getsockname()[:2] for sock, name in ep._engine.tx.owners.items()}


def _link_local(ep: MulticastEndpoint, name: str) -> str:
    (iface,) = (i for i in ep.interfaces if i.name == name)
    return next(str(a.ip) for a in iface.ipv6 if a.ip.is_link_local)


@pytest.mark.parametrize("group", [GROUP4, GROUP6, GROUP6_SITE])
def test_one_fixed_source_port_serves_every_link(lab: Lab, group: str) -> None:
    # Each interface's socket binds (its own address, SPORT): no device binding is
    # needed for three sockets to hold one port. On main the second link's bind
    # failed (EADDRINUSE) and the endpoint sent out of one link only.
    names = [link.host_if for link in lab.link]

    async def main() -> None:
        async with MulticastEndpoint(
            group, PORT, interfaces=names, join=False, watch=False, source_port=SPORT
        ) as ep:
            # IPv6: a link-local source for a link-scope group; a wider group's
            # copies take an address that may leave the link (the lab's fd00:).
            def bound(link: Link) -> str:
                if group == GROUP4:
                    return link.host_addr
                if group == GROUP6:
                    return _link_local(ep, link.host_if)
                return ipaddress.ip_address(str(link.host_addr6)).compressed

            want = {link.host_if: (bound(link), SPORT) for link in lab.link}
            assert _bound(ep) == want
            replies = await _answered(lab, ep, b"fixed", sport=SPORT)
            assert set(replies) == set(names)
            for link in lab.link:
                assert replies[link.host_if].data == b"re:" + link.host_if.encode()
                if group != GROUP6:
                    peer_addr = link.peer_addr if group == GROUP4 else str(link.peer_addr6)
                    source = ipaddress.ip_address(replies[link.host_if].source[0])
                    assert source == ipaddress.ip_address(peer_addr)
            assert (ep.stats.replies, ep.stats.replies_off_link) == (3, 0)

    with lab.inside():
        run(main())


def test_a_fixed_source_port_moves_to_a_new_address_on_its_link(lab: Lab) -> None:
    moved = lab.link[2]
    old = moved.host_addr
    new = old.rsplit(".", 1)[0] + ".77"
    names = [link.host_if for link in lab.link]
    # The new address becomes the primary when the old one goes (Linux would
    # otherwise delete the secondaries with it): the interface stays, changed.
    lab.sh(lab.host, f"sysctl -qw net.ipv4.conf.{moved.host_if}.promote_secondaries=1")

    async def main() -> None:
        async with MulticastEndpoint(
            GROUP4, PORT, interfaces=names, join=False, poll_interval=0.05, source_port=SPORT
        ) as ep:
            before = _bound(ep)
            assert before[moved.host_if] == (old, SPORT)
            lab.sh(lab.host, f"ip addr add {new}/24 dev {moved.host_if}")
            lab.sh(lab.host, f"ip addr del {old}/24 dev {moved.host_if}")
            await wait_for(
                lambda: _bound(ep).get(moved.host_if) == (new, SPORT),
                timeout=10,
                what=f"{moved.host_if}'s socket re-bound to {new}",
            )
            # The same port on the new address; the other links' sockets untouched.
            assert _bound(ep) == {**before, moved.host_if: (new, SPORT)}
            assert len(ep._engine.tx.sockets) == 3
            replies = await _answered(lab, ep, b"moved", sport=SPORT)
            assert replies[moved.host_if].source[0] == moved.peer_addr
            assert (ep.stats.replies, ep.stats.replies_off_link) == (3, 0)

    try:
        with lab.inside():
            run(main())
    finally:
        lab.sh(lab.host, f"ip addr add {old}/24 dev {moved.host_if}", check=False)
        lab.sh(lab.host, f"ip addr del {new}/24 dev {moved.host_if}", check=False)


def test_two_links_sharing_the_source_address_are_a_clear_error(lab: Lab) -> None:
    # One (address, port) cannot be bound twice: the second link is refused, named.
    shared = "10.200.9.9"
    sharing = lab.link[1:]
    for link in sharing:
        lab.sh(lab.host, f"ip addr add {shared}/32 dev {link.host_if}")

    async def main() -> None:
        ep = MulticastEndpoint(
            GROUP4, PORT, join=False, watch=False, source_address=shared, source_port=SPORT
        )
        with pytest.raises(MulticastError) as caught:
            await ep.start()
        await ep.aclose()
        text = str(caught.value)
        assert "could not use 1 of 2 interfaces" in text
        first, second = sorted((link.host_if for link in sharing), key=socket.if_nametoindex)
        assert (
            f"{second} has the address {shared} of {first}, whose transmit socket holds "
            f"source port {SPORT} on it"
        ) in text

    try:
        with lab.inside():
            run(main())
    finally:
        for link in sharing:
            lab.sh(lab.host, f"ip addr del {shared}/32 dev {link.host_if}", check=False)


def test_a_fixed_source_port_moves_to_a_new_link_local_address(lab: Lab) -> None:
    # IPv6 names no source at the interface level (the index alone): the address
    # change reaches the pool as a refresh, which must re-open the socket all the same.
    moved = lab.link[0]
    new = "fe80::77"
    names = [link.host_if for link in lab.link]

    async def main() -> None:
        async with MulticastEndpoint(
            GROUP6, PORT, interfaces=names, join=False, poll_interval=0.05, source_port=SPORT
        ) as ep:
            old = _link_local(ep, moved.host_if)
            before = _bound(ep)
            assert before[moved.host_if] == (old, SPORT)
            lab.sh(lab.host, f"ip -6 addr add {new}/64 dev {moved.host_if} nodad")
            lab.sh(lab.host, f"ip -6 addr del {old}/64 dev {moved.host_if}")
            try:
                await wait_for(
                    lambda: _bound(ep).get(moved.host_if) == (new, SPORT),
                    timeout=10,
                    what=f"{moved.host_if}'s socket re-bound to {new}",
                )
                assert _bound(ep) == {**before, moved.host_if: (new, SPORT)}
                replies = await _answered(lab, ep, b"moved6", sport=SPORT)
                assert set(replies) == set(names)
                assert (ep.stats.replies, ep.stats.replies_off_link) == (3, 0)
            finally:
                lab.sh(lab.host, f"ip -6 addr add {old}/64 dev {moved.host_if} nodad")
                lab.sh(lab.host, f"ip -6 addr del {new}/64 dev {moved.host_if}")

    with lab.inside():
        run(main())


# Last: the link it re-creates has a new index and none of the lab's IPv6 setup.
def test_a_link_removed_and_added_again_is_sent_on_and_answered(lab: Lab) -> None:
    gone = lab.link[1]
    names = [link.host_if for link in lab.link]

    async def main() -> None:
        async with MulticastEndpoint(
            GROUP4, PORT, interfaces=names, join=False, poll_interval=0.05
        ) as ep:
            tx = ep._engine.tx
            lab.remove_link(gone)
            await wait_for(
                lambda: gone.host_if not in tx.names, what=f"{gone.host_if} dropped by polling"
            )
            assert len(tx.sockets) == 2
            assert len(tx.owners) == 2
            results = await ep.send_all(b"two", group=GROUP4)
            assert sorted(r.interface for r in results) == sorted(set(names) - {gone.host_if})
            lab.recreate_link(gone)
            await wait_for(lambda: gone.host_if in tx.names, what=f"{gone.host_if} back by polling")
            assert len(tx.sockets) == 3
            assert sorted(tx.owners.values()) == sorted(names)
            replies = await _answered(lab, ep, b"three")
            assert replies[gone.host_if].source[0] == gone.peer_addr
        # Every socket closed with the endpoint.
        assert tx.owners == {}
        assert tx.sockets == ()

    with lab.inside():
        run(main())
