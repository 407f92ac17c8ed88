"""Interface selections and refused links on a real kernel.

The host gets what a docker or Kubernetes host has: a bridge ``docker0`` with an
address and a veth into it (its other end in another namespace), and a VXLAN
overlay ``flannel.1``; its links eth0/eth1 are veth pairs. (This kernel has no
8021q, dummy, tun or wireguard modules: VLAN stacking is proven on recorded
netlink messages and snapshots in test_selection.py.) Selections decide from what
rtnetlink says each device is. An nftables rule rejecting output on eth1 makes
that link refuse every send.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest

from mcastio import (
    Interface,
    MulticastEndpoint,
    MulticastError,
    default_route_links,
    link_with_vlans,
    no_virtual_links,
    physical_links,
)
from mcastio._discovery import read_snapshot
from mcastio.testing import Lab, Link
from tests.conftest import require, run, wait_for

pytestmark = pytest.mark.lab

PORT = 43190
GROUP = "239.255.19.1"


@pytest.fixture(scope="module")
def docker_lab() -> Iterator[Lab]:
    from mcastio.testing import lab_support

    require(lab_support())
    lab = Lab(links=2, ipv6=False)
    lab.build()
    try:
        h, container = lab.host, lab.link[1].peer_ns
        for cmd in (
            "ip link add docker0 type bridge",
            "ip addr add 172.17.0.1/16 dev docker0",
            f"ip link add vethd0 type veth peer name ceth0 netns {container}",
            "ip link set vethd0 master docker0",
            "ip link set vethd0 up",
            "ip link set docker0 up",
            "ip link add flannel.1 type vxlan id 1 dstport 8472 dev eth1",
            "ip addr add 10.244.0.1/24 dev flannel.1",
            "ip link set flannel.1 up",
        ):
            lab.sh(h, cmd)
        for cmd in ("ip addr add 172.17.0.2/16 dev ceth0", "ip link set ceth0 up"):
            lab.sh(container, cmd)
        yield lab
    finally:
        lab.destroy()


def test_kernel_facts_and_what_each_selection_picks(docker_lab: Lab) -> None:
    lab = docker_lab
    with lab.inside():
        snap = read_snapshot()
    by_name = {i.name: i for i in snap}
    facts = {
        n: (i.kind, by_name_of(snap, i.parent), by_name_of(snap, i.master), i.bus)
        for n, i in by_name.items()
    }
    picks = {
        str(sel): sorted(i.name for i in snap if i.index in sel.pick(snap))
        for sel in (physical_links(), no_virtual_links(), link_with_vlans("eth1"))
    }
    picks["default_route_links()"] = sorted(
        i.name for i in snap if i.index in default_route_links().pick(snap)
    )
    print(f"\nfacts (kind, parent, master, bus): {facts}\npicks: {picks}")
    assert facts["docker0"] == ("bridge", "", "", False)
    assert facts["vethd0"][0] == "veth"
    assert facts["vethd0"][2] == "docker0"
    assert facts["flannel.1"][0] == "vxlan"
    # A veth's IFLA_LINK names its peer (in another namespace here), not a parent.
    assert facts["eth0"] == ("veth", "", "", False)
    assert facts["vethd0"] == ("veth", "", "docker0", False)
    # The lab's links are veth pairs: none is physical, none survives no_virtual.
    assert picks["physical_links()"] == []
    assert picks["no_virtual_links()"] == []
    assert picks["link_with_vlans('eth1')"] == ["eth1"]
    assert picks["default_route_links()"] == ["eth0"]


def by_name_of(snap: tuple[Interface, ...], index: int) -> str:
    return next((i.name for i in snap if i.index == index), "") if index else ""


def test_endpoints_on_each_selection(docker_lab: Lab) -> None:
    lab = docker_lab
    container = Link(9, "vethd0", "ceth0", lab.link[1].peer_ns, "172.17.0.1", "172.17.0.2")

    async def main() -> tuple[list[str], list[str], list[tuple[str, str, str]], str]:
        async with MulticastEndpoint(GROUP, PORT, keepalive=False) as everything:
            default = [i.name for i in everything.interfaces]
        async with MulticastEndpoint(
            GROUP, PORT, interfaces=link_with_vlans("eth1"), keepalive=False
        ) as ep:
            chosen = [i.name for i in ep.interfaces]
            sub = ep.subscribe()
            # The container behind docker0 sends: the eth1-only endpoint never sees it.
            lab.peer_send(container, GROUP, PORT, b"from the container")
            lab.peer_send(lab.link[1], GROUP, PORT, b"from eth1")
            d = await asyncio.wait_for(sub.__anext__(), 5)
            got = [(d.interface, d.source[0], d.data.decode())]
        with pytest.raises(MulticastError) as info:
            async with MulticastEndpoint(GROUP, PORT, interfaces=no_virtual_links(), watch=False):
                pass
        return default, chosen, got, str(info.value)

    with lab.inside():
        default, chosen, got, why = run(main())
    print(f"\ndefault: {default}\nlink_with_vlans('eth1'): {chosen}, got {got}\n{why}")
    assert default == ["eth0", "eth1", "docker0", "flannel.1"]
    assert chosen == ["eth1"]
    assert got == [("eth1", lab.link[1].peer_addr, "from eth1")]
    for name in ("eth0", "eth1", "docker0", "flannel.1"):
        assert f"{name}: excluded by the interfaces= selector" in why


def test_a_refused_link_is_reported_once_and_retried_when_it_changes(
    docker_lab: Lab, caplog: pytest.LogCaptureFixture
) -> None:
    lab = docker_lab
    h = lab.host
    lab.run(h, "nft", "add", "table", "inet", "refuse")
    lab.run(h, "nft", "add", "chain", "inet", "refuse", "out",
            "{ type filter hook output priority 0 ; }")  # fmt: skip
    lab.run(h, "nft", "add", "rule", "inet", "refuse", "out",
            "oifname", "eth1", "udp", "dport", str(PORT), "reject")  # fmt: skip
    listener = lab.peer_listen(lab.link[0], GROUP, PORT)

    async def main() -> list[list[tuple[str, str]]]:
        rounds: list[list[tuple[str, str]]] = []

        def record(results: tuple[object, ...]) -> None:
            rounds.append(
                [(r.interface, r.error.strerror if r.error else "ok") for r in results]  # type: ignore[attr-defined]
            )

        async with MulticastEndpoint(
            GROUP, PORT, interfaces=["eth0", "eth1"], keepalive=False
        ) as ep:
            for n in range(3):
                record(await ep.send_all(f"round {n}\n".encode()))
            refused = dict(ep.refused)
            assert list(refused) == ["eth1"]
            # A send that names the link still tries it (and says why it failed).
            with pytest.raises(MulticastError, match="Operation not permitted"):
                await ep.send(b"named\n", interface="eth1")
            assert list(ep.refused) == ["eth1"]
            # The interface changes (a second address): eth1 is tried again.
            rounds_before = ep._engine.watcher.rounds if ep._engine.watcher else 0
            lab.run(h, "ip", "addr", "add", "10.201.1.9/24", "dev", "eth1")
            await wait_for(lambda: "eth1" not in ep.refused, 5, "eth1 tried again")
            assert ep._engine.watcher is not None
            assert ep._engine.watcher.rounds > rounds_before
            record(await ep.send_all(b"round 3\n"))
            record(await ep.send_all(b"round 4\n"))
            # The rule goes and the link changes again: sends go through.
            lab.run(h, "nft", "delete", "table", "inet", "refuse")
            lab.run(h, "ip", "addr", "del", "10.201.1.9/24", "dev", "eth1")
            await wait_for(lambda: "eth1" not in ep.refused, 5, "eth1 tried again")
            record(await ep.send_all(b"round 5\n"))
            record(await ep.send_all(b"round 6\n"))
        return rounds

    try:
        with caplog.at_level(logging.WARNING, logger="mcastio"), lab.inside():
            rounds = run(main())
    finally:
        lab.run(h, "nft", "delete", "table", "inet", "refuse", check=False)
    listener.wait_for(b"round 6")
    got = [line for line in listener.lines() if line.startswith(b"round")]
    logged = [r.getMessage() for r in caplog.records if "leaving eth1 out" in r.getMessage()]
    print(f"\nrounds: {rounds}\nlog lines: {logged}\neth0 peer got {len(got)}/7")
    refused = "Operation not permitted"
    assert rounds == [
        [("eth0", "ok"), ("eth1", refused)],
        [("eth0", "ok")],
        [("eth0", "ok")],
        [("eth0", "ok"), ("eth1", refused)],
        [("eth0", "ok")],
        [("eth0", "ok"), ("eth1", "ok")],
        [("eth0", "ok"), ("eth1", "ok")],
    ]
    assert len(logged) == 2
    assert got == [f"round {n}".encode() for n in range(7)]
