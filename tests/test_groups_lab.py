"""Several groups in one endpoint, on a real kernel: 50 groups, joins and leaves under traffic.

Each peer sends with one plain socket per group (opened in the peer's namespace,
no mcastio involved). The host's membership cap is 1 per socket, so every group
spreads over one receive socket per interface: the cap holds per group.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from mcastio import Datagram, MulticastEndpoint, MulticastError
from mcastio._platform import capabilities
from mcastio.testing import Lab, Link
from tests.conftest import require, run, wait_for

pytestmark = pytest.mark.lab

PORT = 43180
GROUPS = [f"239.255.18.{n}" for n in range(1, 51)]
ADDED = [f"239.255.18.{n}" for n in range(51, 61)]
REMOVED = GROUPS[:10]
# Joined on the host by another program on the same port: never delivered.
STRANGER = "239.255.18.99"


@pytest.fixture(scope="module")
def groups_lab() -> Iterator[Lab]:
    from mcastio.testing import lab_support

    require(lab_support())
    lab = Lab(links=2, ipv6=False, sysctls={"net.ipv4.igmp_max_memberships": "1"})
    lab.build()
    try:
        yield lab
    finally:
        lab.destroy()


class Senders:
    """One plain UDP socket per (link, group), opened in that link's peer namespace."""

    def __init__(self, lab: Lab, groups: list[str]) -> None:
        self.socks: dict[tuple[str, str], socket.socket] = {}
        for link in lab.link:
            with lab.inside(link.peer_ns):
                for group in groups:
                    self.socks[(link.host_if, group)] = _sender(link)

    def send(self, ifname: str, group: str, payload: bytes) -> None:
        self.socks[(ifname, group)].sendto(payload, (group, PORT))

    def close(self) -> None:
        for sock in self.socks.values():
            sock.close()


def _sender(link: Link) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(link.peer_addr))
    return sock


def _host_groups(lab: Lab) -> dict[str, set[str]]:
    """The IPv4 groups the host's kernel holds per interface (``ip maddr``)."""
    held: dict[str, set[str]] = {}
    for link in lab.link:
        out = lab.run(lab.host, "ip", "-4", "maddr", "show", "dev", link.host_if).stdout
        held[link.host_if] = {w for w in out.split() if w.count(".") == 3}
    return held


def _key(d: Datagram) -> tuple[str, str, str]:
    """(what the payload says: link, group, count) checked against what the endpoint says."""
    link, group, n = d.data.decode().split("|")
    assert (d.group, d.interface) == (group, link), d
    return link, group, n


def test_fifty_groups_each_datagram_once_with_its_group_and_interface(groups_lab: Lab) -> None:
    lab = groups_lab
    names = [lk.host_if for lk in lab.link]
    rounds = 3
    senders = Senders(lab, [*GROUPS, STRANGER])
    with lab.inside():
        stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        stranger.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        stranger.bind((STRANGER, PORT))
        mreq = socket.inet_aton(STRANGER) + socket.inet_aton(lab.link[0].host_addr)
        stranger.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
        # Another program on the port, bound to the wildcard, takes the unicast.
        unicast = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        unicast.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # IP_MULTICAST_ALL off: only the unicast, not every group joined on the port.
        unicast.setsockopt(socket.IPPROTO_IP, 49, 0)
        unicast.bind(("0.0.0.0", PORT))

    async def main() -> tuple[Counter[tuple[str, str, str]], int, int, int]:
        async with MulticastEndpoint(GROUPS, PORT, keepalive=30.0) as ep:
            sub = ep.subscribe(queue_size=8192)
            got: Counter[tuple[str, str, str]] = Counter()
            for n in range(rounds):
                for name in names:
                    for group in [*GROUPS, STRANGER]:
                        senders.send(name, group, f"{name}|{group}|{n}".encode())
                await asyncio.sleep(0)
            # Unicast to the port: the endpoint must leave it to the other program
            # (delivered here it would fail _key: its "group" is no group).
            senders.socks[("eth0", GROUPS[0])].sendto(
                b"eth0|unicast|0", (lab.link[0].host_addr, PORT)
            )
            expected = rounds * len(names) * len(GROUPS)

            async def collect() -> None:
                while sum(got.values()) < expected:
                    for d in await sub.get_batch():
                        got[_key(d)] += 1

            await asyncio.wait_for(collect(), 10)
            # A little longer: anything more would be a duplicate or a stranger.
            await asyncio.sleep(0.1)
            for d in sub._queue:
                got[_key(d)] += 1
            keepers = len(ep.keepalive_state)
            # The portable profile runs no keeper (its reason is logged instead).
            kept = set(GROUPS) if capabilities().keeper else set()
            assert {s.group for s in ep.keepalive_state} == kept
            return got, len(ep._engine.memberships.sockets), keepers, ep.stats.not_for_group

    try:
        with lab.inside():
            got, sockets, keepers, not_for_group = run(main())
        stranger.settimeout(2)
        stranger_got = len(stranger.recv(100))
        unicast.settimeout(2)
        unicast_got = unicast.recv(100)
    finally:
        senders.close()
        stranger.close()
        unicast.close()
    per_interface = Counter(link for link, _g, _n in got.elements())
    per_group = Counter(g for _l, g, _n in got.elements())
    print(
        f"\n50 groups x {len(names)} links x {rounds} rounds: delivered {sum(got.values())} "
        f"of {rounds * len(names) * len(GROUPS)}; distinct {len(got)}; max per datagram "
        f"{max(got.values())}; per interface {dict(per_interface)}; per group min/max "
        f"{min(per_group.values())}/{max(per_group.values())}; receive sockets {sockets}; "
        f"keeper tracks {keepers}; stranger delivered {per_group.get(STRANGER, 0)}"
    )
    assert set(got.values()) == {1}
    assert set(got) == {
        (name, group, str(n)) for name in names for group in GROUPS for n in range(rounds)
    }
    assert STRANGER not in per_group
    assert stranger_got > 0
    assert unicast_got == b"eth0|unicast|0"
    # Cap 1 per socket: each group holds one socket per interface.
    assert sockets == len(GROUPS) * len(names)
    assert keepers == (len(GROUPS) * len(names) if capabilities().keeper else 0)
    assert not_for_group == 0


def test_groups_added_and_removed_under_traffic(groups_lab: Lab) -> None:
    lab = groups_lab
    names = [lk.host_if for lk in lab.link]
    everyone = [*GROUPS, *ADDED]
    senders = Senders(lab, everyone)
    rounds, switch = 12, 5
    maddr: dict[str, set[str]] = {}

    async def main() -> tuple[list[Datagram], int, list[str]]:
        async with MulticastEndpoint(GROUPS, PORT, keepalive=False) as ep:
            sub = ep.subscribe(queue_size=16384)
            received: list[Datagram] = []
            mark = -1

            async def consume() -> None:
                async for d in sub:
                    received.append(d)

            consumer = asyncio.create_task(consume())
            for n in range(rounds):
                if n == switch:
                    for group in REMOVED:
                        await ep.remove_group(group)
                    # Nothing the consumer reads from here on may be of a removed group.
                    mark = len(received)
                    for group in ADDED:
                        await ep.add_group(group)
                    maddr.update(_host_groups(lab))
                for name in names:
                    for group in everyone:
                        senders.send(name, group, f"{name}|{group}|{n}".encode())
                await asyncio.sleep(0.01)
            last = {(name, g, str(rounds - 1)) for name in names for g in ep.groups}
            await wait_for(
                lambda: last <= {_key(d) for d in received}, 10, "the last round of every group"
            )
            await asyncio.sleep(0.05)
            groups = list(ep.groups)
            consumer.cancel()
            await asyncio.gather(consumer, return_exceptions=True)
            return received, mark, groups

    try:
        with lab.inside():
            received, mark, groups = run(main())
    finally:
        senders.close()
    keys = Counter(_key(d) for d in received)
    late = [k for k in (_key(d) for d in received[mark:]) if k[1] in REMOVED]
    added = {k for k in keys if k[1] in ADDED}
    kept = [g for g in GROUPS if g not in REMOVED]
    print(
        f"\nunder traffic: {len(received)} delivered, duplicates "
        f"{sum(c - 1 for c in keys.values())}, removed groups delivered after removal "
        f"{len(late)}, added groups delivered in rounds {sorted({int(k[2]) for k in added})}"
    )
    assert max(keys.values()) == 1
    assert late == []
    # Left on every interface, and the new ones joined on every interface.
    for name in names:
        assert not maddr[name] & set(REMOVED)
        assert maddr[name] >= set(ADDED) | set(kept)
    assert not any(k[1] in REMOVED and int(k[2]) >= switch for k in keys)
    assert groups == [*kept, *ADDED]
    # Kept groups: every round. Added groups: every round from the switch on.
    for name in names:
        for group in kept:
            assert {(name, group, str(n)) for n in range(rounds)} <= keys.keys()
        for group in ADDED:
            assert {(name, group, str(n)) for n in range(switch, rounds)} <= keys.keys()
            assert not any(k[1] == group and int(k[2]) < switch - 1 for k in keys)


def test_removed_group_already_queued_is_not_delivered(groups_lab: Lab) -> None:
    lab = groups_lab
    senders = Senders(lab, GROUPS[:2])

    async def main() -> tuple[int, list[tuple[str | None, bytes]]]:
        async with MulticastEndpoint(GROUPS[:2], PORT, keepalive=False) as ep:
            sub = ep.subscribe()
            for group in GROUPS[:2]:
                senders.send("eth0", group, group.encode())
            # Read by the endpoint and queued, not yet handed out.
            await wait_for(lambda: sub.queued == 2, 5, "both datagrams queued")
            await ep.remove_group(GROUPS[0])
            queued = sub.queued
            with pytest.raises(ValueError, match="only group"):
                await ep.remove_group(GROUPS[1])
            with pytest.raises(ValueError, match="not one of"):
                await ep.remove_group(GROUPS[0])
            await ep.add_group(GROUPS[0])
            with pytest.raises(ValueError, match="name one with group="):
                ep.send_all_nowait(b"x")
            out = [(d.group, d.data) for d in await sub.get_batch()]
            return queued, out

    try:
        with lab.inside():
            queued, out = run(main())
    finally:
        senders.close()
    assert queued == 1
    assert out == [(GROUPS[1], GROUPS[1].encode())]


def test_add_group_is_all_or_nothing(groups_lab: Lab) -> None:
    lab = groups_lab

    async def main() -> tuple[tuple[str, ...], int]:
        async with MulticastEndpoint(GROUPS[:1], PORT, keepalive=False, watch=False) as ep:
            before = len(ep._engine.memberships.sockets)
            # Every join is refused now: nothing of the group may stay behind.
            lab.sh(lab.host, "sysctl -qw net.ipv4.igmp_max_memberships=0")
            try:
                with pytest.raises(MulticastError):
                    await ep.add_group(ADDED[0])
            finally:
                lab.sh(lab.host, "sysctl -qw net.ipv4.igmp_max_memberships=1")
            assert len(ep._engine.memberships.sockets) == before
            with pytest.raises(ValueError, match="family"):
                await ep.add_group("ff05::1")
            return ep.groups, before

    with lab.inside():
        groups, before = run(main())
    assert groups == (GROUPS[0],)
    assert before == 2


GROUPS6 = ["ff02::17:1", "ff02::17:2", "ff05::17:1", "ff05::17:2"]


@pytest.mark.linux_profile(
    reason="the Linux profile's socket spreading, with IPv6 groups wider than the link"
)
def test_ipv6_groups_link_and_site_scope_spread_past_optmem(
    make_lab: Callable[..., Lab],
) -> None:
    # 100 bytes of option memory hold one IPv6 membership per socket: each site-scope
    # group spreads over one socket per interface; a link-scope one has those anyway.
    lab = make_lab(links=3, sysctls={"net.core.optmem_max": "100"})
    names = [lk.host_if for lk in lab.link]
    socks: dict[str, socket.socket] = {}
    for link in lab.link:
        with lab.inside(link.peer_ns):
            sock = socks[link.host_if] = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            index = socket.if_nametoindex(link.peer_if)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)

    async def main() -> tuple[Counter[tuple[str, str, str]], int]:
        async with MulticastEndpoint(GROUPS6, PORT, keepalive=False, watch=False) as ep:
            sub = ep.subscribe()
            for name in names:
                for group in GROUPS6:
                    socks[name].sendto(f"{name}|{group}|0".encode(), (group, PORT))
            got: Counter[tuple[str, str, str]] = Counter()
            while sum(got.values()) < len(names) * len(GROUPS6):
                for d in await asyncio.wait_for(sub.get_batch(), 5):
                    got[_key(d)] += 1
            await asyncio.sleep(0.05)
            for d in sub._queue:
                got[_key(d)] += 1
            return got, len(ep._engine.memberships.sockets)

    try:
        with lab.inside():
            got, sockets = run(main())
    finally:
        for sock in socks.values():
            sock.close()
    print(f"\nIPv6 {len(GROUPS6)} groups x {len(names)} links: delivered {sum(got.values())}, "
          f"distinct {len(got)}, receive sockets {sockets}")  # fmt: skip
    assert set(got.values()) == {1}
    assert set(got) == {(n, g, "0") for n in names for g in GROUPS6}
    assert sockets == len(GROUPS6) * len(names)


def test_the_watcher_joins_every_group_on_a_new_link(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(links=1, ipv6=False)
    groups = GROUPS[:3]

    async def main() -> tuple[list[tuple[str, str]], list[str], set[str], list[str]]:
        async with (
            MulticastEndpoint(groups, PORT, keepalive=False) as ep,
            MulticastEndpoint(groups, PORT, join=False, keepalive=False) as sender,
        ):
            sub = ep.subscribe()
            link = await asyncio.to_thread(lab.add_link)
            await wait_for(lambda: len(ep.interfaces) == 2, 5, "eth1 joined")
            await wait_for(lambda: len(sender.interfaces) == 2, 5, "eth1 sending")
            held = _host_groups(lab)[link.host_if]
            listener = await asyncio.to_thread(lab.peer_listen, link, groups[1], PORT)
            results = await sender.send_all(b"to eth1\n", group=groups[1])
            await asyncio.to_thread(listener.wait_for, b"to eth1")
            await asyncio.to_thread(listener.stop)
            with lab.inside(link.peer_ns):
                out = _sender(link)
            for group in groups:
                out.sendto(f"{link.host_if}|{group}|0".encode(), (group, PORT))
            out.close()
            got: list[tuple[str, str]] = []
            while len(got) < len(groups):
                for d in await asyncio.wait_for(sub.get_batch(), 5):
                    got.append((d.interface, str(d.group)))
            return got, [r.interface for r in results if r.ok], held, list(sender.groups)

    with lab.inside():
        got, sent_on, held, sender_groups = run(main())
    assert sorted(got) == [("eth1", g) for g in groups]
    assert sent_on == ["eth0", "eth1"]
    assert set(groups) <= held
    assert sender_groups == groups


def test_ssm_sources_hold_for_every_group(groups_lab: Lab) -> None:
    from tests.test_ssm_lab import source_filters

    lab = groups_lab
    link = lab.link[0]
    allowed = link.peer_addr
    other = str(ipaddress.IPv4Address(allowed) + 1)
    lab.sh(link.peer_ns, f"ip addr add {other}/24 dev {link.peer_if}")
    ssm = ["232.1.17.1", "232.1.17.2"]

    async def main() -> tuple[set[tuple[str, str, str]], list[tuple[str | None, str]]]:
        async with MulticastEndpoint(ssm, PORT, sources=[allowed], keepalive=False) as ep:
            sub = ep.subscribe()
            with pytest.raises(ValueError, match="not a source-specific"):
                await ep.add_group("239.255.18.200")
            await ep.add_group("232.1.17.3")
            filters = source_filters(lab, False)
            for group in [*ssm, "232.1.17.3"]:
                for source in (other, allowed):
                    payload = f"{group} from {source}".encode()
                    send = functools.partial(lab.peer_send, source=source)
                    await asyncio.to_thread(send, link, group, PORT, payload)
            got: list[tuple[str | None, str]] = []
            while len(got) < 3:
                for d in await asyncio.wait_for(sub.get_batch(), 5):
                    got.append((d.group, d.source[0]))
            await asyncio.sleep(0.05)
            got += [(d.group, d.source[0]) for d in sub._queue]
            return filters, got

    with lab.inside():
        filters, got = run(main())
    for group in [*ssm, "232.1.17.3"]:
        for lk in lab.link:
            assert (lk.host_if, group, allowed) in filters
    assert sorted(got) == [(g, allowed) for g in [*ssm, "232.1.17.3"]]
