"""Pure logic: no sockets, no event loop."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import pytest

from mcastio._discovery import _prefixlen
from mcastio._model import Interface, parse_group, plan_changes, select_interfaces, validate_payload
from mcastio._options import validate_port, validate_queue_size, validate_ttl
from mcastio._platform.linux.procnet import parse_if_inet6


def iface(name: str, index: int, *addrs: str, **kw: Any) -> Interface:
    v4 = tuple(ipaddress.IPv4Interface(a) for a in addrs if ":" not in a)
    v6 = tuple(ipaddress.IPv6Interface(a) for a in addrs if ":" in a)
    return Interface(name=name, index=index, ipv4=v4, ipv6=v6, **kw)


G4 = parse_group("239.255.0.1")
G6_LINK = parse_group("ff02::1:3")
G6_SITE = parse_group("ff05::1:3")


@pytest.mark.parametrize(
    ("text", "family", "scope"),
    [
        ("239.255.0.1", socket.AF_INET, "administrative"),
        ("224.0.0.251", socket.AF_INET, "link-local"),
        ("232.1.1.1", socket.AF_INET, "source-specific"),
        ("233.1.1.1", socket.AF_INET, "global"),
        ("ff02::fb", socket.AF_INET6, "link-local"),
        ("ff05::1:3", socket.AF_INET6, "site-local"),
        ("ff15::1", socket.AF_INET6, "site-local"),
        ("FF0E::1", socket.AF_INET6, "global"),
    ],
)
def test_parse_group(text: str, family: socket.AddressFamily, scope: str) -> None:
    group = parse_group(text)
    assert group.family == family
    assert group.scope == scope
    assert str(group) == str(ipaddress.ip_address(text))


@pytest.mark.parametrize(
    ("bad", "hint"),
    [
        ("10.0.0.1", "not a multicast address"),
        ("192.168.1.255", "not a multicast address"),
        ("fe80::1", "not a multicast address"),
        ("239.255.0", "not an IP address"),
        ("eth0", "not an IP address"),
        ("", "not an IP address"),
        ("ff01::1", "interface-local"),
    ],
)
def test_bad_groups_explain_themselves(bad: str, hint: str) -> None:
    with pytest.raises(ValueError, match=hint):
        parse_group(bad)


def test_group_must_be_a_string() -> None:
    with pytest.raises(ValueError, match="must be a string"):
        parse_group(0xEFFF0001)  # type: ignore[arg-type]


@pytest.mark.parametrize("port", [0, -1, 65536, 1.5, "5000", True, None])
def test_bad_ports(port: object) -> None:
    with pytest.raises(ValueError, match="port must be an integer from 1 to 65535"):
        validate_port(port)  # type: ignore[arg-type]


def test_good_port_and_ttl() -> None:
    assert validate_port(1) == 1
    assert validate_port(65535) == 65535
    assert validate_ttl(0) == 0
    assert validate_ttl(255) == 255
    assert validate_queue_size(1) == 1


@pytest.mark.parametrize("ttl", [-1, 256, "1", False])
def test_bad_ttl(ttl: object) -> None:
    with pytest.raises(ValueError, match="ttl must be"):
        validate_ttl(ttl)  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [0, -5, 1.0, True])
def test_bad_queue_size(size: object) -> None:
    with pytest.raises(ValueError, match="queue_size"):
        validate_queue_size(size)  # type: ignore[arg-type]


def test_payload_limits() -> None:
    assert len(validate_payload(b"x" * 65507, G4)) == 65507
    with pytest.raises(ValueError, match="65508 bytes exceeds the UDP maximum of 65507"):
        validate_payload(b"x" * 65508, G4)
    assert len(validate_payload(bytearray(65527), G6_LINK)) == 65527
    with pytest.raises(ValueError, match="65528 bytes exceeds"):
        validate_payload(memoryview(bytes(65528)), G6_LINK)
    with pytest.raises(TypeError, match="bytes-like"):
        validate_payload("text", G4)


def test_eligibility_defaults() -> None:
    snapshot = (
        iface("lo", 1, "127.0.0.1/8", loopback=True),
        iface("eth0", 2, "10.0.0.5/24", is_default=True),
        iface("wlan0", 3, "192.168.1.9/24"),
        iface("down0", 4, "10.9.0.1/24", up=False),
        iface("nocarrier", 5, "10.8.0.1/24", running=False),
        iface("tun0", 6, "10.7.0.1/24", multicast=False),
        iface("noaddr", 7),
        iface("v6only", 8, "fe80::1/64"),
        iface("v6global", 9, "fe80::2/64", "2001:db8::2/64"),
    )
    assert [i.name for i in select_interfaces(snapshot, G4, None)] == ["eth0", "wlan0"]
    # Link-local IPv6 addresses suffice for a link-scope group, not for a site-scope one.
    assert [i.name for i in select_interfaces(snapshot, G6_LINK, None)] == ["v6only", "v6global"]
    assert [i.name for i in select_interfaces(snapshot, G6_SITE, None)] == ["v6global"]


def test_selector_by_name_and_predicate() -> None:
    snapshot = (
        iface("eth0", 2, "10.0.0.5/24"),
        iface("eth1", 3, "10.0.1.5/24"),
        iface("eth2", 4, "10.0.2.5/24", up=False),
    )
    assert [i.name for i in select_interfaces(snapshot, G4, ["eth1", "eth2"])] == ["eth1"]
    chosen = select_interfaces(snapshot, G4, lambda i: i.name != "eth0")
    assert [i.name for i in chosen] == ["eth1"]
    with pytest.raises(ValueError, match=r"unknown interface name\(s\) 'wlan9'.*eth0, eth1, eth2"):
        select_interfaces(snapshot, G4, ["eth0", "wlan9"])
    with pytest.raises(ValueError, match="list of names"):
        select_interfaces(snapshot, G4, "eth0")


def test_plan_changes_add_remove_change() -> None:
    eth0 = iface("eth0", 2, "10.0.0.5/24")
    eth1 = iface("eth1", 3, "10.0.1.5/24")
    current = {2: eth0, 3: eth1}
    assert not plan_changes(current, [eth0, eth1], socket.AF_INET)
    # A second address after the first keeps the source address: no new socket.
    two = iface("eth0", 2, "10.0.0.5/24", "10.0.0.6/24")
    plan = plan_changes(current, [two, eth1], socket.AF_INET)
    assert (plan.add, plan.remove, plan.change, plan.refresh) == ((), (), (), (two,))
    moved = iface("eth1", 3, "10.0.1.77/24")
    plan = plan_changes(current, [eth0, moved], socket.AF_INET)
    assert plan.change == ((eth1, moved),)
    assert not plan.refresh
    assert not plan.add
    assert not plan.remove
    # Re-created under the same name: new index, so a leave and a fresh join.
    reborn = iface("eth1", 9, "10.0.1.5/24")
    plan = plan_changes(current, [eth0, reborn], socket.AF_INET)
    assert plan.add == (reborn,)
    assert plan.remove == (eth1,)
    plan = plan_changes({}, [eth0], socket.AF_INET)
    assert plan.add == (eth0,)


def test_prefixlen_from_psutil_masks() -> None:
    assert _prefixlen("255.255.255.0", 32) == 24
    assert _prefixlen("ffff:ffff:ffff:ffff::", 128) == 64
    assert _prefixlen(None, 32) == 32
    assert _prefixlen("garbage", 128) == 128


def test_parse_if_inet6_reports_tentative_and_failed() -> None:
    text = (
        "fd000000000000000000000000000002 04 40 00 80     eth0\n"
        "fe8000000000000000fc00fffe000001 04 40 20 c0     eth0\n"
        "20010db8000000000000000000000009 05 40 00 08     eth1\n"
        "malformed line\n"
    )
    unusable = parse_if_inet6(text)
    assert unusable == {
        "eth0": {ipaddress.IPv6Address("fe80::fc:ff:fe00:1")},
        "eth1": {ipaddress.IPv6Address("2001:db8::9")},
    }


def test_ipv6_address_changes_never_rebuild_sockets() -> None:
    # IPv6 transmit sockets name only the index; the kernel picks each source.
    old = iface("eth0", 2, "10.0.0.5/24", "fd00::5/64")
    new = iface("eth0", 2, "10.0.0.9/24", "fd00::9/64")
    v6 = plan_changes({2: old}, [new], socket.AF_INET6)
    assert (v6.change, v6.refresh) == ((), (new,))
    v4 = plan_changes({2: old}, [new], socket.AF_INET)
    assert (v4.change, v4.refresh) == (((old, new),), ())
