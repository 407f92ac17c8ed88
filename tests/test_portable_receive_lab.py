"""The portable receive path on a real kernel: a socket per (interface, group).

Built from mcastio._platform.portable (the plan) and portable_sockets (open and
read), joined by index with MCAST_JOIN_GROUP in Linux's layout: every datagram is
read once, on the socket of the link it came in on, with its group, and nothing
of a group not joined. This proves the plan and the kernel's per-socket
filtering on Linux; the BSDs' and Windows' behaviour is from their sources
(docs/explanation/platforms.md).
"""

from __future__ import annotations

import dataclasses
import select
import socket
import time
from collections.abc import Iterator, Sequence

import pytest

from mcastio import MulticastError
from mcastio._discovery import read_snapshot
from mcastio._model import Datagram, Interface, parse_group
from mcastio._platform.linux.procnet import parse_igmp
from mcastio._platform.portable import ReceiveSocket, plan_receive
from mcastio._platform.portable_sockets import open_receive, read_datagrams
from mcastio.testing import Lab

pytestmark = [pytest.mark.lab, pytest.mark.one_path]

PORT = 5044


def lab_interfaces(lab: Lab) -> list[Interface]:
    names = {link.host_if for link in lab.link}
    return [i for i in read_snapshot() if i.name in names]


class Opened:
    def __init__(self, plan: Sequence[ReceiveSocket], sources: Sequence[str] = ()) -> None:
        self.items: dict[socket.socket, ReceiveSocket] = {}
        try:
            for item in plan:
                self.items[open_receive(item, PORT, platform="linux", sources=sources)] = item
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for sock in self.items:
            sock.close()

    def read_until(self, count: int, timeout: float = 5.0) -> list[Datagram]:
        """Datagrams read from every socket until ``count`` came, then a short quiet."""
        got: list[Datagram] = []
        deadline = time.monotonic() + timeout
        quiet_until: float | None = None
        while True:
            now = time.monotonic()
            if len(got) >= count and quiet_until is None:
                # Anything extra (a duplicate) would be queued already: look once more.
                quiet_until = now + 0.2
            end = quiet_until if quiet_until is not None else deadline
            if now >= end:
                return got
            ready, _, _ = select.select(list(self.items), [], [], end - now)
            for sock in ready:
                batch, _reads = read_datagrams(sock, self.items[sock])
                got.extend(batch)


@pytest.fixture
def opened() -> Iterator[list[Opened]]:
    held: list[Opened] = []
    yield held
    for o in held:
        o.close()


def test_one_socket_per_link_and_group_reads_each_datagram_once_where_it_came(
    lab: Lab, opened: list[Opened]
) -> None:
    with lab.inside():
        ifaces = lab_interfaces(lab)
        groups = [parse_group("239.255.44.1"), parse_group("239.255.44.2")]
        plan = plan_receive(ifaces, groups, platform="linux")
        assert len(plan) == len(ifaces) * len(groups) == 6
        sockets = Opened(plan)
        opened.append(sockets)
        for link in lab.link:
            for group in (*groups, parse_group("239.255.44.3")):  # .3 is not joined
                lab.peer_send(link, str(group), PORT, f"{group} {link.host_if}".encode())
        got = sockets.read_until(6)
    said = sorted((d.data.decode(), d.group, d.interface, d.ttl) for d in got)
    assert said == sorted(
        (f"{g} {ln.host_if}", str(g), ln.host_if, None) for ln in lab.link for g in groups
    )
    peers = {ln.host_if: ln.peer_addr for ln in lab.link}
    assert all(d.source[0] == peers[d.interface] for d in got)


def test_link_scoped_ipv6_bound_by_scope_and_ssm(lab: Lab, opened: list[Opened]) -> None:
    with lab.inside():
        ifaces = lab_interfaces(lab)
        lab.wait_ipv6_ready(lab.link)
        v6 = plan_receive(ifaces, [parse_group("ff02::4244")], platform="linux")
        assert [item.scope for item in v6] == [i.index for i in ifaces]
        # Source-specific: one link's peer is the only source admitted.
        only = lab.link[1]
        ssm = plan_receive(ifaces, [parse_group("232.1.44.1")], platform="linux")
        v6_sockets, ssm_sockets = Opened(v6), Opened(ssm, sources=[only.peer_addr])
        opened.extend((v6_sockets, ssm_sockets))
        for link in lab.link:
            lab.peer_send(link, "ff02::4244", PORT, link.host_if.encode())
            lab.peer_send(link, "232.1.44.1", PORT, link.host_if.encode())
        got6 = v6_sockets.read_until(3)
        got_ssm = ssm_sockets.read_until(1)
    assert sorted((d.data.decode(), d.interface) for d in got6) == [
        (ln.host_if, ln.host_if) for ln in lab.link
    ]
    assert [(d.data.decode(), d.interface, d.group) for d in got_ssm] == [
        (only.host_if, only.host_if, "232.1.44.1")
    ]


def held(group: str) -> set[str]:
    """The interfaces this namespace's kernel holds ``group`` on (/proc/net/igmp)."""
    with open("/proc/net/igmp") as f:
        devices = parse_igmp(f.read())
    return {m.interface for d in devices for m in d.groups if str(m.group) == group}


def test_a_failed_join_leaves_nothing_joined(lab: Lab) -> None:
    with lab.inside():
        ifaces = lab_interfaces(lab)
        group = parse_group("239.255.44.9")
        [item, *_] = plan_receive(ifaces, [group], platform="linux")
        # The second join of the same group on the same interface fails (EADDRINUSE)
        # after the first succeeded: the first must not stay behind.
        twice = dataclasses.replace(item, groups=(group, group))
        with pytest.raises(MulticastError, match=r"239\.255\.44\.9 on eth0"):
            open_receive(twice, PORT, platform="linux")
        assert held("239.255.44.9") == set()
        sock = open_receive(item, PORT, platform="linux")
        try:
            assert held("239.255.44.9") == {item.interface}
        finally:
            sock.close()
