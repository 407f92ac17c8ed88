"""The rtnetlink snapshot is the psutil/netifaces/sysfs one, on a real kernel.

The lab's host gets what makes the two readers differ if one is wrong: IPv4
labels (listed by getifaddrs under their own names), a point-to-point address
with a peer, IPv6 addresses waiting for DAD on a link without carrier (so they
stay tentative while both read), a down link, a bridge with a port, a VXLAN.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

import pytest

from mcastio._discovery import read_snapshot, read_snapshot_psutil
from mcastio._platform.linux.hostdump import read_host
from mcastio.testing import Lab
from tests.conftest import require

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    from mcastio.testing import lab_support

    require(lab_support())
    lab = Lab(links=2)
    lab.build()
    try:
        h = lab.host
        for cmd in (
            # eth2 is up, its peer down: no carrier. ethd is down.
            "ip link add eth2 type veth peer name peer2",
            "ip link set eth2 up",
            "ip link add ethd type veth peer name peerd",
            "ip addr add 10.201.0.9/32 dev eth0 label eth0:b",
            "ip addr add 10.201.0.8/32 dev eth0 label eth0:a",
            "ip addr add 10.201.0.7/24 dev eth0",
            "ip addr add 10.202.0.1 peer 10.202.0.2/32 dev eth1",
            # eth2 has no carrier: DAD never runs, the address stays tentative.
            "sysctl -qw net.ipv6.conf.eth2.accept_dad=1",
            "ip -6 addr add fd02::1/64 dev eth2",
            "ip -6 addr add fd01::7/64 dev eth1 nodad",
            "ip link add br0 type bridge",
            "ip link add vethb type veth peer name vethc",
            "ip link set vethb master br0",
            "ip addr add 172.18.0.1/16 dev br0",
            "ip link set vethb up",
            "ip link set br0 up",
            "ip link add vx0 type vxlan id 9 dstport 4789 dev eth1",
            "ip link set vx0 up",
        ):
            lab.sh(h, cmd)
        yield lab
    finally:
        lab.destroy()


def test_netlink_snapshot_equals_the_psutil_one(lab: Lab) -> None:
    with lab.inside():
        fast = read_snapshot()
        slow = read_snapshot_psutil()
        _links, addresses = read_host()
    assert fast == slow
    by_name = {i.name: i for i in fast}
    # What was set up is there, so equality is not two empty readings.
    eth0, eth1, eth2 = by_name["eth0"], by_name["eth1"], by_name["eth2"]
    assert [str(a) for a in eth0.ipv4] == [
        "10.200.0.1/24", "10.201.0.7/24", "10.201.0.8/32", "10.201.0.9/32",
    ]  # fmt: skip
    assert "10.202.0.1/32" in [str(a) for a in eth1.ipv4]
    assert "fd01::7/64" in [str(a) for a in eth1.ipv6]
    assert (eth2.up, eth2.running) == (True, False)
    assert not by_name["ethd"].up
    # Dumped, tentative, and left out by both readers.
    tentative = ipaddress.IPv6Address("fd02::1").packed
    assert [a.flags & 0x40 for a in addresses if a.packed == tentative] == [0x40]
    assert "fd02::1/64" not in [str(a) for a in eth2.ipv6]
    assert eth0.is_default
    assert by_name["vethb"].master == by_name["br0"].index
    assert by_name["vx0"].kind == "vxlan"
    assert by_name["lo"].loopback
