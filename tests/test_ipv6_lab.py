"""IPv6 (MLD) groups on every link of a namespace lab, with socat UDP6 peers."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time

import pytest

from mcastio import Datagram, MulticastEndpoint, Subscription
from mcastio.testing import Lab, PeerListener
from tests.conftest import run

# Every test runs with each receive drain (compiled, recvmmsg and recvmsg).
pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("receive_drain")]

PORT = 5400


async def collect(sub: Subscription, payloads: set[bytes], timeout: float = 5.0) -> list[Datagram]:
    """Datagrams in arrival order until every one of ``payloads`` has been seen.

    Different links are different queues in the kernel, so only the set, not
    the order across links, is certain.
    """
    got: list[Datagram] = []

    async def gather() -> None:
        async for dgram in sub:
            got.append(dgram)
            if payloads <= {d.data for d in got}:
                return
        raise AssertionError(f"subscription ended before {payloads!r}; got {got}")

    try:
        await asyncio.wait_for(gather(), timeout)
    except asyncio.TimeoutError:
        raise AssertionError(f"only {got} of {payloads!r} within {timeout}s") from None
    return got


@pytest.mark.parametrize(
    ("group", "wire_group"),
    [
        ("ff05::4242", "ff05::4242"),
        # A non-canonical spelling must still match the kernel's pktinfo destination.
        ("FF05:0:0:0:0:0:0:4243", "ff05::4243"),
        ("ff02::4242", "ff02::4242"),
    ],
)
def test_receive_from_every_link_attributed(lab: Lab, group: str, wire_group: str) -> None:
    async def main() -> None:
        async with MulticastEndpoint(group, PORT) as ep:
            assert [i.name for i in ep.interfaces] == ["eth0", "eth1", "eth2"]
            index = {i.name: i.index for i in ep.interfaces}
            sub = ep.subscribe()
            for link in lab.link:
                lab.peer_send(link, wire_group, PORT, link.host_if.encode())
            got = await collect(sub, {b"eth0", b"eth1", b"eth2"})
            # Exactly one datagram per link, each attributed to the link it came in on.
            assert sorted((d.data.decode(), d.interface) for d in got) == [
                ("eth0", "eth0"),
                ("eth1", "eth1"),
                ("eth2", "eth2"),
            ]
            peers = {link.host_if: link for link in lab.link}
            for dgram in got:
                link = peers[dgram.interface]
                assert dgram.group == wire_group
                host, port, _flow, scope_id = dgram.source  # type: ignore[misc]
                assert 1 <= port <= 65535
                assert "%" not in host
                addr = ipaddress.IPv6Address(host)
                if group.startswith("ff02"):
                    # The peer's link-local address; its scope is the arrival interface.
                    assert addr.is_link_local, host
                    assert scope_id == index[link.host_if]
                else:
                    assert addr == ipaddress.IPv6Address(link.peer_addr6)
                    assert scope_id == 0
            assert ep.stats.not_for_group == 0

    with lab.inside():
        run(main())


@pytest.mark.parametrize("group", ["ff05::4242", "ff02::4242"])
def test_send_all_one_copy_per_link(lab: Lab, group: str) -> None:
    listeners: list[PeerListener] = [lab.peer_listen(link, group, PORT) for link in lab.link]

    async def main() -> None:
        async with MulticastEndpoint(group, PORT) as ep:
            for payload in (b"hello\n", b"end\n"):
                results = await ep.send_all(payload)
                assert [(r.interface, r.ok, r.sent) for r in results] == [
                    ("eth0", True, len(payload)),
                    ("eth1", True, len(payload)),
                    ("eth2", True, len(payload)),
                ]

    with lab.inside():
        run(main())
    for listener in listeners:
        listener.wait_for(b"end")
    assert [lst.lines() for lst in listeners] == [[b"hello", b"end"]] * 3


def test_reply_to_link_local_source(lab: Lab) -> None:
    """``Datagram.source`` of a link-local sender is directly usable with sendto()."""
    link = lab.link[2]
    # socat's receive socket is bound to the port on every address of the peer,
    # so it also gets the unicast reply to its link-local address.
    listener = lab.peer_listen(link, "ff02::4244", PORT)

    async def main() -> None:
        async with MulticastEndpoint("ff02::4244", PORT) as ep:
            sub = ep.subscribe()
            lab.peer_send(link, "ff02::4244", PORT, b"ping\n")
            (dgram,) = await collect(sub, {b"ping\n"})
            assert dgram.interface == "eth2"
            host, _port, flow, scope_id = dgram.source  # type: ignore[misc]
            with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
                # No interface given but the scope_id: the reply finds eth2 by itself.
                s.sendto(b"pong\n", (host, PORT, flow, scope_id))

    with lab.inside():
        run(main())
    listener.wait_for(b"pong")
    # The peer's own "ping" loops back to its listener (IPV6_MULTICAST_LOOP defaults to 1).
    assert listener.lines() == [b"ping", b"pong"]


def test_tentative_address_skipped_until_usable(lab: Lab) -> None:
    from mcastio._discovery import read_snapshot

    # Real DAD, made quick: one probe 100 ms after the address is added.
    for key, value in (
        ("accept_dad", "1"),
        ("dad_transmits", "1"),
        ("router_solicitation_delay", "0"),
    ):
        lab.sh(lab.host, f"sysctl -qw net.ipv6.conf.eth1.{key}={value}")
    lab.sh(lab.host, "sysctl -qw net.ipv6.neigh.eth1.retrans_time_ms=100")
    lab.sh(lab.host, "ip -6 addr add fd00:1::77/64 dev eth1")
    new = ipaddress.IPv6Address("fd00:1::77")

    def eth1_addresses() -> set[ipaddress.IPv6Address]:
        with lab.inside():
            (eth1,) = (i for i in read_snapshot() if i.name == "eth1")
        return {a.ip for a in eth1.ipv6}

    assert "tentative" in lab.run(lab.host, "ip", "-6", "addr", "show", "dev", "eth1").stdout
    first = eth1_addresses()
    assert new not in first
    assert ipaddress.IPv6Address("fd00:1::1") in first
    deadline = time.monotonic() + 5
    while new not in eth1_addresses():
        assert time.monotonic() < deadline, "address never left the tentative state"
        time.sleep(0.05)
    assert "tentative" not in lab.run(lab.host, "ip", "-6", "addr", "show", "dev", "eth1").stdout


def test_other_groups_on_the_same_port_stay_out(lab: Lab) -> None:
    """IPV6_MULTICAST_ALL=0: the kernel does not hand us groups another socket joined."""

    async def main() -> None:
        async with (
            MulticastEndpoint("ff05::4242", PORT) as mine,
            MulticastEndpoint("ff05::4343", PORT) as other,
        ):
            my_sub, other_sub = mine.subscribe(), other.subscribe()
            link = lab.link[1]
            lab.peer_send(link, "ff05::4343", PORT, b"not yours")
            assert [d.data for d in await collect(other_sub, {b"not yours"})] == [b"not yours"]
            lab.peer_send(link, "ff05::4242", PORT, b"end")
            assert [d.data for d in await collect(my_sub, {b"end"})] == [b"end"]
            # Not even seen and discarded by the pktinfo check: it never reached the socket.
            assert mine.stats.not_for_group == 0
            assert mine.stats.received == 1

    with lab.inside():
        run(main())


def _igmp6_groups(lab: Lab) -> set[tuple[str, str]]:
    """(device, group) memberships of the host, from /proc/net/igmp6."""
    text = lab.run(lab.host, "cat", "/proc/net/igmp6").stdout
    return {
        (parts[1], str(ipaddress.IPv6Address(bytes.fromhex(parts[2]))))
        for parts in (line.split() for line in text.splitlines())
    }


def test_reconcile_follows_ipv6_address_changes(lab: Lab) -> None:
    """What the watcher does on an address event: snapshot, plan_changes, _apply."""
    from mcastio._discovery import read_snapshot
    from mcastio._model import parse_group, plan_changes, select_interfaces

    group = "ff05::4246"
    site = parse_group(group)

    def reconcile(ep: MulticastEndpoint) -> tuple[str, ...]:
        desired = select_interfaces(read_snapshot(), site, None)
        plan = plan_changes({i.index: i for i in ep.interfaces}, desired, site.family)
        assert ep._engine.links.apply(plan) == []
        return tuple(
            [f"+{i.name}" for i in plan.add]
            + [f"-{i.name}" for i in plan.remove]
            + [f"~{new.name}" for _, new in plan.change]
            + [f"={i.name}" for i in plan.refresh]
        )

    async def main() -> None:
        async with MulticastEndpoint(group, PORT) as ep:
            sub = ep.subscribe()
            assert {("eth2", group)} <= _igmp6_groups(lab)
            # eth2 keeps only its link-local address: too narrow for a site-scope group.
            lab.sh(lab.host, "ip -6 addr del fd00:2::1/64 dev eth2")
            assert reconcile(ep) == ("-eth2",)
            assert [i.name for i in ep.interfaces] == ["eth0", "eth1"]
            assert ("eth2", group) not in _igmp6_groups(lab)
            # Back again; a second address on eth1 is recorded, its socket kept.
            lab.sh(lab.host, "ip -6 addr add fd00:2::1/64 dev eth2 nodad")
            lab.sh(lab.host, "ip -6 addr add fd00:1::9/64 dev eth1 nodad")
            assert reconcile(ep) == ("+eth2", "=eth1")
            assert ("eth2", group) in _igmp6_groups(lab)
            eth1 = next(i for i in ep.interfaces if i.name == "eth1")
            assert ipaddress.IPv6Address("fd00:1::9") in {a.ip for a in eth1.ipv6}
            assert reconcile(ep) == ()
            lab.peer_send(lab.link[2], group, PORT, b"back on eth2")
            (dgram,) = await collect(sub, {b"back on eth2"})
            assert dgram.interface == "eth2"
            results = await ep.send_all(b"x")
            assert [(r.interface, r.ok) for r in results] == [
                ("eth0", True),
                ("eth1", True),
                ("eth2", True),
            ]

    with lab.inside():
        run(main())
