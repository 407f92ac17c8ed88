"""Where the portable profile binds a transmit socket with a fixed source port: pure.

Each interface's socket binds its own address and the port
(:func:`mcastio._txnet.fixed_port_sockaddr`); the lab side is in
tests/test_portable_send_lab.py.
"""

from __future__ import annotations

import ipaddress
import socket

import pytest

from mcastio import MulticastError
from mcastio._model import Group, Interface, parse_group
from mcastio._origin import Origin
from mcastio._txnet import bound_to, fixed_port_sockaddr
from mcastio._txsocket import SendOptions

V4 = parse_group("239.255.44.1")
LINK6 = parse_group("ff02::44:1")
SITE6 = parse_group("ff05::44:1")
ETH1 = Interface(
    "eth1",
    7,
    ipv4=(ipaddress.IPv4Interface("10.0.1.1/24"), ipaddress.IPv4Interface("10.0.1.9/24")),
    ipv6=(ipaddress.IPv6Interface("fd00:1::1/64"), ipaddress.IPv6Interface("fe80::1/64")),
)
BARE = Interface("tun0", 9)


def test_an_ephemeral_port_binds_no_address_of_its_own() -> None:
    assert fixed_port_sockaddr(V4, ETH1, Origin()) is None
    assert fixed_port_sockaddr(LINK6, ETH1, Origin(address="fe80::1")) is None


def test_ipv4_binds_the_interfaces_first_address_or_the_one_asked() -> None:
    assert fixed_port_sockaddr(V4, ETH1, Origin(port=4000)) == ("10.0.1.1", 4000)
    assert fixed_port_sockaddr(V4, ETH1, Origin(address="10.0.1.9", port=4000)) == (
        "10.0.1.9",
        4000,
    )


def test_ipv6_binds_a_source_of_the_groups_scope() -> None:
    # Link scope: the link-local address, scoped to the interface's index.
    assert fixed_port_sockaddr(LINK6, ETH1, Origin(port=4000)) == ("fe80::1", 4000, 0, 7)
    # Wider: an address that may leave the link (RFC 4291 2.5.6), unscoped.
    assert fixed_port_sockaddr(SITE6, ETH1, Origin(port=4000)) == ("fd00:1::1", 4000, 0, 0)
    only_local = Interface("eth2", 8, ipv6=(ipaddress.IPv6Interface("fe80::2/64"),))
    assert fixed_port_sockaddr(SITE6, only_local, Origin(port=4000)) == ("fe80::2", 4000, 0, 8)
    asked = Origin(address="fd00:1::1", port=4000)
    assert fixed_port_sockaddr(LINK6, ETH1, asked) == ("fd00:1::1", 4000, 0, 0)


@pytest.mark.parametrize("group", [V4, LINK6], ids=["ipv4", "ipv6"])
def test_an_interface_without_an_address_of_the_family_is_named(group: Group) -> None:
    with pytest.raises(MulticastError, match=r"tun0 has no IPv[46] address to bind source port"):
        fixed_port_sockaddr(group, BARE, Origin(port=4000))


def test_only_the_portable_profiles_own_port_binds_an_address() -> None:
    fixed = Origin(port=4000)
    portable = SendOptions(socket.AF_INET, 1, False, None, fixed, portable=True)
    assert portable.bind_address(V4, ETH1) == ("10.0.1.1", 4000)
    # Linux's pinned socket (one for every interface) and the group's port: the wildcard.
    assert SendOptions(socket.AF_INET, 1, False, None, fixed).bind_address(V4, ETH1) is None
    group_port = SendOptions(socket.AF_INET, 1, False, 5044, fixed, portable=True)
    assert group_port.bind_address(V4, ETH1) is None


def test_bound_to_compares_address_and_port() -> None:
    # The wildcard: no address to configure, so it holds in any namespace.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("0.0.0.0", 0))
        port = sock.getsockname()[1]
        assert bound_to(sock, ("0.0.0.0", port))
        assert not bound_to(sock, ("10.0.1.1", port))
        assert not bound_to(sock, ("0.0.0.0", port + 1 if port < 65535 else 1))
