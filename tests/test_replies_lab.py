"""Replies to what the endpoint sends, the group-port mode, and unicast the endpoint never takes."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct

import pytest

import mcastio
from mcastio.testing import Lab, Link
from tests.conftest import run

# Every test runs with each receive drain (compiled, recvmmsg and recvmsg).
pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("receive_drain")]

GROUP4, GROUP6_LINK, GROUP6_SITE = "239.255.30.1", "ff02::1:30", "ff05::1:30"
PORT = 5730


def family_of(group: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in group else socket.AF_INET


def peer_responder(lab: Lab, link: Link, group: str) -> socket.socket:
    """A socket in ``link``'s peer joined to ``group`` on ``PORT``, as a responder's is."""
    family = family_of(group)
    with lab.inside(link.peer_ns):
        sock = socket.socket(family, socket.SOCK_DGRAM)
        index = socket.if_nametoindex(link.peer_if)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET:
        sock.bind(("0.0.0.0", PORT))
        mreq = struct.pack("=4s4si", socket.inet_aton(group), bytes(4), index)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    else:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(("::", PORT))
        mreq6 = socket.inet_pton(family, group) + struct.pack("=I", index)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq6)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
    sock.settimeout(2.0)
    return sock


async def take(
    sub: mcastio.Subscription, count: int, timeout: float = 3.0
) -> list[mcastio.Datagram]:
    got: list[mcastio.Datagram] = []

    async def gather() -> None:
        async for dgram in sub:
            got.append(dgram)
            if len(got) == count:
                return

    try:
        await asyncio.wait_for(gather(), timeout)
    except asyncio.TimeoutError:
        raise AssertionError(f"only {got} of {count} within {timeout}s") from None
    return got


def drain(sock: socket.socket) -> list[bytes]:
    sock.setblocking(False)
    out = []
    while True:
        try:
            out.append(sock.recv(2048))
        except BlockingIOError:
            return out


@pytest.mark.parametrize("group", [GROUP4, GROUP6_LINK, GROUP6_SITE])
def test_unicast_replies_are_delivered_per_interface(lab: Lab, group: str) -> None:
    lab.wait_ipv6_ready(lab.link)
    responders = [peer_responder(lab, link, group) for link in lab.link]

    async def main() -> tuple[list[mcastio.Datagram], mcastio.EndpointStats, list[tuple[str, int]]]:
        async with mcastio.MulticastEndpoint(group, PORT, watch=False) as ep:
            sub = ep.subscribe()
            await ep.send_all(b"request")
            sources = []
            for link, sock in zip(lab.link, responders, strict=True):
                data, source = await asyncio.to_thread(sock.recvfrom, 2048)
                assert data == b"request"
                sources.append(source[:2])
                # Answer by unicast to the sender's address and port, as SSDP does.
                sock.sendto(f"reply from {link.host_if}".encode(), source)
            got = await take(sub, len(lab.link))
            return got, ep.stats, sources

    try:
        with lab.inside():
            got, stats, sources = run(main())
    finally:
        for sock in responders:
            sock.close()
    assert sorted((d.interface, d.data, d.group, d.is_reply) for d in got) == [
        (lk.host_if, f"reply from {lk.host_if}".encode(), None, True) for lk in lab.link
    ]
    # Each copy left from a port of its own, not the group's.
    assert all(port != PORT for _, port in sources)
    assert stats.replies == len(lab.link)
    assert stats.received == 0


@pytest.mark.parametrize("group", [GROUP4, GROUP6_LINK, GROUP6_SITE])
def test_group_port_mode_sends_from_the_port_and_takes_no_unicast(lab: Lab, group: str) -> None:
    lab.wait_ipv6_ready(lab.link)
    family = family_of(group)
    responders = [peer_responder(lab, link, group) for link in lab.link]
    with lab.inside():
        # Another program on the host, bound to the port's wildcard address.
        other = socket.socket(family, socket.SOCK_DGRAM)
    other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        other.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    other.bind(("0.0.0.0" if family == socket.AF_INET else "::", PORT))

    async def main() -> tuple[list[mcastio.Datagram], mcastio.EndpointStats, list[tuple[str, int]]]:
        ep = mcastio.MulticastEndpoint(group, PORT, source_port="group", watch=False)
        async with ep:
            assert ep.source_port == "group"
            sub = ep.subscribe()
            await ep.send_all(b"request")
            sources = []
            for link, sock in zip(lab.link, responders, strict=True):
                data, source = await asyncio.to_thread(sock.recvfrom, 2048)
                assert data == b"request"
                sources.append(source[:2])
                sock.sendto(b"unicast answer", source)  # goes to the other program
                sock.sendto(f"multicast answer {link.host_if}".encode(), (group, PORT))
            got = await take(sub, len(lab.link))
            await asyncio.sleep(0.1)
            return got, ep.stats, sources

    try:
        with lab.inside():
            got, stats, sources = run(main())
        theirs = drain(other)
    finally:
        for sock in [*responders, other]:
            sock.close()
    host_addrs = {
        ipaddress.ip_address((lk.host_addr if family == socket.AF_INET else lk.host_addr6) or "")
        for lk in lab.link
    }
    assert {port for _, port in sources} == {PORT}
    if group != GROUP6_LINK:  # a link-scope group is sent from the link-local address
        assert {ipaddress.ip_address(addr) for addr, _ in sources} == host_addrs
    assert sorted((d.interface, d.data, d.group) for d in got) == [
        (lk.host_if, f"multicast answer {lk.host_if}".encode(), group) for lk in lab.link
    ]
    assert stats.replies == 0
    assert stats.not_for_group == 0
    assert theirs.count(b"unicast answer") == len(lab.link)


def udp_no_ports(lab: Lab, family: socket.AddressFamily) -> int:
    """The host's count of UDP datagrams that found no socket (the NoPorts counter)."""
    if family == socket.AF_INET6:
        text = lab.run(lab.host, "cat", "/proc/net/snmp6").stdout
        return int(dict(ln.split() for ln in text.splitlines())["Udp6NoPorts"])
    lines = [ln.split() for ln in lab.run(lab.host, "cat", "/proc/net/snmp").stdout.splitlines()]
    head, values = (ln for ln in lines if ln[0] == "Udp:")
    return int(values[head.index("NoPorts")])


@pytest.mark.linux_profile(
    reason="one pinned transmit socket and pktinfo; the portable profile's per-interface "
    "sockets are tested in tests/test_portable_send_lab.py"
)
@pytest.mark.parametrize("group", [GROUP4, GROUP6_LINK, GROUP6_SITE])
def test_unicast_on_excluded_links_is_never_delivered(lab: Lab, group: str) -> None:
    lab.wait_ipv6_ready(lab.link)
    family = family_of(group)
    flood = 200
    used, excluded = lab.link[1], lab.link[0]

    def host_addr(link: Link) -> str:
        return link.host_addr if family == socket.AF_INET else (link.host_addr6 or "")

    if family == socket.AF_INET6:
        # Peers have an IPv4 default route only; the flood must reach the other link's address.
        lab.sh(excluded.peer_ns, f"ip -6 route add default via {host_addr(excluded)}")

    async def main() -> tuple[mcastio.EndpointStats, int]:
        ep = mcastio.MulticastEndpoint(group, PORT, interfaces=[used.host_if], watch=False)
        async with ep:
            (tx,) = (s.sock for s in ep._engine.tx.sockets)
            tx_port = tx.getsockname()[1]
            before = udp_no_ports(lab, family)
            with lab.inside(excluded.peer_ns):
                flooder = socket.socket(family, socket.SOCK_DGRAM)
            with flooder:
                for n in range(flood):
                    # To the group's port on the host and to the used link's reply port,
                    # both arriving on the excluded link.
                    flooder.sendto(b"x", (host_addr(excluded), PORT))
                    flooder.sendto(b"x", (host_addr(used), tx_port))
                    if n % 50 == 0:
                        await asyncio.sleep(0)
            await asyncio.sleep(0.2)
            return ep.stats, udp_no_ports(lab, family) - before

    with lab.inside():
        stats, no_ports = run(main())
    # The group's port: no socket of the endpoint matched, the kernel dropped them
    # all as for a closed port. The reply port: the endpoint's one transmit socket
    # serves every link it uses, not device-bound, so the flood is read, and none
    # of it delivered: it arrived on a link the endpoint does not use.
    assert no_ports == flood
    assert (stats.received, stats.replies, stats.not_for_group) == (0, 0, flood)


@pytest.mark.linux_profile(
    reason="the Linux profile's socket layout, with an IPv6 group wider than the link"
)
def test_link_scope_ipv6_gets_one_receive_socket_per_interface(lab: Lab) -> None:
    lab.wait_ipv6_ready(lab.link)

    async def main() -> list[list[tuple[object, ...]]]:
        async with (
            mcastio.MulticastEndpoint(GROUP6_LINK, PORT, watch=False) as link_ep,
            mcastio.MulticastEndpoint(GROUP6_SITE, PORT, watch=False) as site_ep,
        ):
            return [
                sorted(s.getsockname() for s in ep._engine.memberships.sockets)
                for ep in (link_ep, site_ep)
            ]

    with lab.inside():
        link_names, site_names = run(main())
        indexes = sorted(socket.if_nametoindex(lk.host_if) for lk in lab.link)
    # inet6_bind needs a scope id for ff02:: and then ties the socket to that device.
    assert link_names == [(GROUP6_LINK, PORT, 0, i) for i in indexes]
    assert site_names == [(GROUP6_SITE, PORT, 0, 0)]
