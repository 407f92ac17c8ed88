"""Sharing a port with the programs already on it: avahi-daemon on the host, and plain sockets.

The receive sockets are bound to the group, the transmit sockets to an ephemeral
port or to (group, port): none of them competes for unicast sent to the port, so
the program bound to the wildcard address gets all of it, whichever started first.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections import Counter

import pytest

import mcastio
from mcastio.testing import Lab, Link
from mcastio.testing.responders import Avahi, responder_support
from tests.conftest import require, run

pytestmark = pytest.mark.lab

MDNS4, MDNS6, PORT = "224.0.0.251", "ff02::fb", 5353
QUERIES = 5
IP_MULTICAST_ALL, IPV6_MULTICAST_ALL = 49, 29  # from linux/in.h and linux/in6.h


def host_query(query_id: int) -> bytes:
    """A unicast query for the host avahi's own name, A and AAAA."""
    name = b"\x06hostav\x05local\x00"
    return struct.pack("!6H", query_id, 0, 2, 0, 0, 0) + b"".join(
        name + struct.pack("!HH", qtype, 1) for qtype in (1, 28)
    )


def peer_socket(lab: Lab, link: Link, family: socket.AddressFamily) -> socket.socket:
    with lab.inside(link.peer_ns):
        sock = socket.socket(family, socket.SOCK_DGRAM)
        if family == socket.AF_INET6:
            index = socket.if_nametoindex(link.peer_if)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
    return sock


def ask_host(lab: Lab, link: Link, family: socket.AddressFamily) -> int:
    """Send QUERIES unicast queries to the host's port 5353; how many were answered."""
    addr = link.host_addr if family == socket.AF_INET else (link.host_addr6 or "")
    answered = 0
    with peer_socket(lab, link, family) as sock:
        sock.settimeout(1.0)
        for n in range(QUERIES):
            sock.sendto(host_query(n), (addr, PORT))
            try:
                data = sock.recv(2048)
            except TimeoutError:
                continue
            answered += struct.unpack_from("!H", data)[0] == n and bool(data[2] & 0x80)
    return answered


def send_group(lab: Lab, link: Link, family: socket.AddressFamily, group: str) -> None:
    with peer_socket(lab, link, family) as sock:
        for n in range(QUERIES):
            sock.sendto(b"group %d" % n, (group, PORT))


@pytest.mark.parametrize("source_port", ["ephemeral", "group"])
@pytest.mark.parametrize("order", ["mcastio-first", "avahi-first"])
def test_avahi_on_the_host_answers_every_unicast_query(
    lab: Lab, order: str, source_port: str
) -> None:
    require(responder_support())
    lab.wait_ipv6_ready(lab.link)
    avahi = Avahi(lab, lab.host, [lk.host_if for lk in lab.link], "hostav")
    families = {socket.AF_INET: MDNS4, socket.AF_INET6: MDNS6}

    async def main() -> tuple[Counter[tuple[str, str]], Counter[tuple[str, str]]]:
        if order == "avahi-first":
            await asyncio.to_thread(avahi.start)
        ep = mcastio.DualStackEndpoint(
            MDNS4, MDNS6, PORT, source_port=source_port, watch=False, require_both=True
        )
        async with ep:
            sub = ep.subscribe()
            if order == "mcastio-first":
                await asyncio.to_thread(avahi.start)
            # The transmit sockets are in place and have sent: in group mode they
            # hold (group, 5353) too.
            await ep.send_all(b"\0" * 12)
            answered: Counter[tuple[str, str]] = Counter()
            for link in lab.link:
                for family, group in families.items():
                    answered[(link.host_if, family.name)] = await asyncio.to_thread(
                        ask_host, lab, link, family
                    )
                    await asyncio.to_thread(send_group, lab, link, family, group)
            got: Counter[tuple[str, str]] = Counter()

            async def collect() -> None:
                async for dgram in sub:
                    if dgram.data.startswith(b"group "):
                        got[(dgram.interface, dgram.group or "reply")] += 1
                    if sum(got.values()) == QUERIES * 2 * len(lab.link):
                        return

            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(collect(), 2.0)
            stats4, stats6 = (e.stats for e in (ep.ipv4, ep.ipv6) if e is not None)
            assert stats4.not_for_group == stats6.not_for_group == 0
        return answered, got

    try:
        with lab.inside():
            answered, got = run(main())
    finally:
        avahi.stop()
    print(f"\n{order}, source_port={source_port}: avahi answered {dict(answered)}; mcastio {got}")
    assert set(answered.values()) == {QUERIES}
    assert got == Counter(
        {(lk.host_if, group): QUERIES for lk in lab.link for group in (MDNS4, MDNS6)}
    )


def wildcard_program(lab: Lab, family: socket.AddressFamily, option: int) -> socket.socket:
    """Another program's socket on the port's wildcard address, taking no multicast.

    With no group of its own, mcastio's receive socket is the only one a group
    datagram matches: the case where a reuseport group would misdeliver.
    """
    with lab.inside():
        sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, option, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MULTICAST_ALL, 0)
    else:
        sock.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
    sock.bind(("0.0.0.0" if family == socket.AF_INET else "::", PORT + 1))
    sock.setblocking(False)
    return sock


@pytest.mark.parametrize("source_port", ["ephemeral", "group"])
@pytest.mark.parametrize("option", ["SO_REUSEADDR", "SO_REUSEPORT"])
@pytest.mark.parametrize("group", ["239.255.31.1", "ff02::1:31", "ff05::1:31"])
def test_a_program_on_the_wildcard_address_gets_every_unicast(
    lab: Lab, group: str, option: str, source_port: str
) -> None:
    lab.wait_ipv6_ready(lab.link)
    family = socket.AF_INET6 if ":" in group else socket.AF_INET
    count = len(lab.link) * QUERIES

    async def once(first: str) -> tuple[int, int]:
        program: socket.socket | None = None
        if first == "program":
            program = wildcard_program(lab, family, getattr(socket, option))
        ep = mcastio.MulticastEndpoint(group, PORT + 1, source_port=source_port, watch=False)
        async with ep:
            if program is None:
                program = wildcard_program(lab, family, getattr(socket, option))
            with program:
                sub = ep.subscribe()
                await ep.send_all(b"x")
                for link in lab.link:
                    addr = link.host_addr if family == socket.AF_INET else link.host_addr6
                    with peer_socket(lab, link, family) as sock:
                        for n in range(QUERIES):
                            sock.sendto(b"unicast %d" % n, (addr, PORT + 1))
                            sock.sendto(b"group %d" % n, (group, PORT + 1))
                got = 0

                async def collect() -> None:
                    nonlocal got
                    async for dgram in sub:
                        got += dgram.data.startswith(b"group ") and dgram.group == group
                        if got == count:
                            return

                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(collect(), 2.0)
                theirs = 0
                with contextlib.suppress(BlockingIOError):
                    while True:
                        theirs += program.recv(100).startswith(b"unicast ")
                assert ep.stats.not_for_group == ep.stats.replies == 0
        return got, theirs

    with lab.inside():
        results = {first: run(once(first)) for first in ("program", "mcastio")}
    print(f"\n{group} {option} {source_port}: (mcastio group, program unicast) {results}")
    assert results == {"program": (count, count), "mcastio": (count, count)}
