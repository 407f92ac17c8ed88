"""The on-link rule for unicast sends and answers: pure decisions over a snapshot."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

import mcastio
from mcastio._model import Interface
from mcastio._onlink import route_answer, route_unicast

V4, V6 = socket.AF_INET, socket.AF_INET6

ETH1 = Interface(
    "eth1",
    3,
    ipv4=(ipaddress.IPv4Interface("10.1.0.1/24"), ipaddress.IPv4Interface("192.168.7.9/16")),
    ipv6=(ipaddress.IPv6Interface("fd00:1::1/64"), ipaddress.IPv6Interface("fe80::1/64")),
)
ETH2 = Interface(
    "eth2",
    4,
    ipv4=(ipaddress.IPv4Interface("10.2.0.1/24"),),
    ipv6=(ipaddress.IPv6Interface("fe80::2/64"),),
)
NOW = (ETH1, ETH2)


def test_ipv4_on_link_leaves_from_the_address_of_that_prefix() -> None:
    route = route_unicast("10.1.0.77", 5353, "eth1", NOW, V4)
    assert (route.destination, route.ifindex, route.source) == (("10.1.0.77", 5353), 3, "10.1.0.1")
    second = route_unicast("192.168.200.1", 9, "eth1", NOW, V4)
    assert second.source == "192.168.7.9"


def test_ipv6_link_local_is_always_on_link_with_the_interface_as_scope() -> None:
    route = route_unicast("fe80::99", 5353, "eth2", NOW, V6)
    assert route.destination == ("fe80::99", 5353, 0, 4)
    assert (route.ifindex, route.source) == (4, "")
    # A zone naming the same interface, by name or index, is accepted.
    assert route_unicast("fe80::99%eth2", 5353, "eth2", NOW, V6) == route
    assert route_unicast("fe80::99%4", 5353, "eth2", NOW, V6) == route


def test_ipv6_global_needs_a_prefix_of_the_interface() -> None:
    route = route_unicast("fd00:1::abc", 1900, "eth1", NOW, V6)
    assert route.destination == ("fd00:1::abc", 1900, 0, 0)
    assert route.source == "fd00:1::1"
    # eth2 has only a link-local address: nothing but link-local is on its link.
    with pytest.raises(mcastio.NotOnLinkError, match="eth2"):
        route_unicast("fd00:1::abc", 1900, "eth2", NOW, V6)


def test_off_subnet_sources_are_refused_not_routed() -> None:
    with pytest.raises(mcastio.NotOnLinkError, match=r"10\.2\.0\.5 is not on eth1"):
        route_unicast("10.2.0.5", 5353, "eth1", NOW, V4)
    with pytest.raises(mcastio.NotOnLinkError, match="default route"):
        route_unicast("8.8.8.8", 53, "eth2", NOW, V4)


def test_a_link_that_is_gone_is_its_own_error() -> None:
    with pytest.raises(mcastio.InterfaceGoneError, match=r"'eth9'.*current: eth1, eth2"):
        route_unicast("10.1.0.5", 5353, "eth9", NOW, V4)
    with pytest.raises(mcastio.InterfaceGoneError, match="current: none"):
        route_unicast("10.1.0.5", 5353, "eth1", (), V4)
    assert issubclass(mcastio.InterfaceGoneError, mcastio.MulticastError)
    assert issubclass(mcastio.NotOnLinkError, mcastio.MulticastError)


@pytest.mark.parametrize(
    ("address", "port", "family", "match"),
    [
        ("fd00:1::5", 5353, V4, "is IPv6 but this endpoint is IPv4"),
        ("10.1.0.5", 5353, V6, "is IPv4 but this endpoint is IPv6"),
        ("224.0.0.251", 5353, V4, "send to the group"),
        ("0.0.0.0", 5353, V4, "unicast"),
        ("nonsense", 5353, V4, "not an IP address"),
        ("10.1.0.5", 0, V4, "port"),
        ("10.1.0.5", 70000, V4, "port"),
        ("fe80::1%eth2", 5353, V6, "zone 'eth2'"),
    ],
)
def test_bad_arguments_are_value_errors(
    address: str, port: int, family: socket.AddressFamily, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        route_unicast(address, port, "eth1", NOW, family)


def test_answer_uses_the_source_scope_and_refuses_another_links() -> None:
    # A datagram from fe80::99 that arrived on eth2 carries eth2's index as scope.
    route = route_answer(("fe80::99", 40000, 0, 4), "eth2", NOW, V6)
    assert route.destination == ("fe80::99", 40000, 0, 4)
    with pytest.raises(mcastio.NotOnLinkError, match="another link"):
        route_answer(("fe80::99", 40000, 0, 4), "eth1", NOW, V6)
    assert route_answer(("10.2.0.7", 5353), "eth2", NOW, V4).source == "10.2.0.1"
    with pytest.raises(TypeError):
        route_answer("10.2.0.7", "eth2", NOW, V4)


@given(st.ip_addresses(v=4), st.integers(8, 30), st.ip_addresses(v=4))
def test_ipv4_decision_is_exactly_prefix_membership(
    local: ipaddress.IPv4Address, prefixlen: int, peer: ipaddress.IPv4Address
) -> None:
    net = ipaddress.IPv4Interface(f"{local}/{prefixlen}")
    iface = Interface("eth5", 7, ipv4=(net,))
    if peer.is_multicast or peer.is_unspecified:
        with pytest.raises(ValueError, match="unicast"):
            route_unicast(str(peer), 5353, "eth5", (iface,), V4)
    elif peer in net.network:
        route = route_unicast(str(peer), 5353, "eth5", (iface,), V4)
        assert (route.ifindex, route.source, route.destination) == (
            7,
            str(local),
            (str(peer), 5353),
        )
    else:
        with pytest.raises(mcastio.NotOnLinkError):
            route_unicast(str(peer), 5353, "eth5", (iface,), V4)


@given(st.ip_addresses(v=6), st.integers(0, 2**32 - 1))
def test_ipv6_link_local_routes_only_with_a_matching_scope(
    peer: ipaddress.IPv6Address, scope: int
) -> None:
    iface = Interface("eth5", 7, ipv6=(ipaddress.IPv6Interface("fd00:5::1/64"),))
    if peer.is_multicast or peer.is_unspecified:
        return
    source = (str(peer), 5353, 0, scope)
    if peer.is_link_local:
        if scope in (0, 7):
            assert route_answer(source, "eth5", (iface,), V6).destination[-1] == 7
        else:
            with pytest.raises(mcastio.NotOnLinkError):
                route_answer(source, "eth5", (iface,), V6)
    elif peer in ipaddress.IPv6Network("fd00:5::/64"):
        assert route_answer(source, "eth5", (iface,), V6).source == "fd00:5::1"
    else:
        with pytest.raises(mcastio.NotOnLinkError):
            route_answer(source, "eth5", (iface,), V6)
