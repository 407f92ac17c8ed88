"""Pure IPv6 and source-specific multicast decisions: no sockets, no namespaces."""

from __future__ import annotations

import ipaddress
import socket
import struct

import pytest

from mcastio._model import (
    Interface,
    is_eligible,
    is_source_specific,
    parse_group,
    plan_changes,
    select_interfaces,
    validate_sources,
)
from mcastio._platform.linux import MCAST_JOIN_SOURCE_GROUP, receiver
from mcastio._platform.linux.procnet import parse_if_inet6

# Lines captured from /proc/net/if_inet6 of a lab host (kernel 6.18): index,
# prefix length, scope, flags in hex, then the device.
IF_INET6 = """\
fe80000000000000106248fffe145f85 02 40 20 80     eth0
00000000000000000000000000000001 01 80 10 80       lo
fd000097000000000000000000000001 02 40 00 c0     eth0
fd000098000000000000000000000001 02 40 00 c4     eth0
fd000000000000000000000000000001 02 40 00 82     eth0
fd000099000000000000000000000001 02 40 00 80     eth0
fd000000000000000000000000000002 02 40 00 c8     eth0
fe80000000000000d8582efffec116d5 03 40 20 c0     eth1
"""


def v6if(*addrs: str) -> tuple[ipaddress.IPv6Interface, ...]:
    return tuple(ipaddress.IPv6Interface(a) for a in addrs)


def test_parse_if_inet6_reports_tentative_and_failed_addresses() -> None:
    assert parse_if_inet6(IF_INET6) == {
        # 0xc0: permanent + tentative (DAD running); 0xc8: DAD failed.
        "eth0": {ipaddress.IPv6Address("fd00:97::1"), ipaddress.IPv6Address("fd00::2")},
        "eth1": {ipaddress.IPv6Address("fe80::d858:2eff:fec1:16d5")},
    }


def test_parse_if_inet6_optimistic_address_is_usable() -> None:
    # 0xc4 = permanent + tentative + optimistic: usable during DAD (RFC 4429).
    line = "fd000098000000000000000000000001 02 40 00 c4     eth0\n"
    assert parse_if_inet6(line) == {}


def test_parse_if_inet6_ignores_malformed_lines() -> None:
    assert parse_if_inet6("\ngarbage\nfd00 02 40\n") == {}


LINK_LOCAL_ONLY = Interface("eth1", 3, ipv6=v6if("fe80::1/64"))
GLOBAL = Interface("eth2", 4, ipv6=v6if("fe80::2/64", "fd00:2::1/64"))
NO_V6 = Interface("eth3", 5, ipv4=(ipaddress.IPv4Interface("10.0.0.1/24"),))


def test_link_local_only_interface_is_eligible_for_link_scope_groups_only() -> None:
    link, site = parse_group("ff02::fb"), parse_group("ff05::c")
    assert is_eligible(LINK_LOCAL_ONLY, link)
    assert not is_eligible(LINK_LOCAL_ONLY, site)
    assert is_eligible(GLOBAL, site)
    assert not is_eligible(NO_V6, link)
    snapshot = (LINK_LOCAL_ONLY, GLOBAL, NO_V6)
    assert select_interfaces(snapshot, link, None) == (LINK_LOCAL_ONLY, GLOBAL)
    assert select_interfaces(snapshot, site, None) == (GLOBAL,)


def test_plan_changes_follows_ipv6_address_changes() -> None:
    site = parse_group("ff05::4242")
    current = {i.index: i for i in select_interfaces((LINK_LOCAL_ONLY, GLOBAL), site, None)}
    assert list(current) == [4]
    # eth1 gains a global address (DAD done), eth2 gets a second one.
    eth1 = Interface("eth1", 3, ipv6=v6if("fe80::1/64", "fd00:1::1/64"))
    eth2 = Interface("eth2", 4, ipv6=v6if("fe80::2/64", "fd00:2::1/64", "fd00:2::9/64"))
    plan = plan_changes(current, select_interfaces((eth1, eth2), site, None), site.family)
    assert plan.add == (eth1,)
    assert plan.remove == ()
    # The kernel picks IPv6 sources per datagram: the transmit socket stays.
    assert (plan.change, plan.refresh) == ((), (eth2,))
    # eth2 loses its last global address: a site-scope group can no longer use it.
    eth2_ll = Interface("eth2", 4, ipv6=v6if("fe80::2/64"))
    joined = {3: eth1, 4: eth2}
    plan = plan_changes(joined, select_interfaces((eth1, eth2_ll), site, None), site.family)
    assert (plan.add, plan.remove, plan.change) == ((), (eth2,), ())
    # ... while a link-scope group keeps it, with the same transmit socket.
    link = parse_group("ff02::4242")
    plan = plan_changes(joined, select_interfaces((eth1, eth2_ll), link, None), link.family)
    assert (plan.add, plan.remove, plan.change, plan.refresh) == ((), (), (), (eth2_ll,))


@pytest.mark.parametrize(
    "group",
    ["ff05::4242", "ff02::1:ff00:1", "ff05:0:1:1:1:1:1:1", "ff0e:0:0:1::1", "ff02::fb"],
)
def test_group_text_matches_pktinfo_text(group: str) -> None:
    # The endpoint compares inet_ntop text of the pktinfo destination; any
    # spelling of the group must reduce to exactly that text.
    g = parse_group(group.upper())
    packed = ipaddress.IPv6Address(group).packed
    assert socket.inet_ntop(socket.AF_INET6, packed) == socket.inet_ntop(
        socket.AF_INET6, g.address.packed
    )
    assert str(g) == socket.inet_ntop(socket.AF_INET6, packed)


@pytest.mark.parametrize(
    ("group", "ssm"),
    [
        ("232.0.0.1", True),
        ("232.255.255.255", True),
        ("239.1.2.3", False),
        ("224.0.0.251", False),
        ("ff3e::4242", True),
        ("ff32::1", True),
        ("ff35::8000:1", True),
        ("ff3e:40:2001:db8::1", False),  # unicast-prefix based (RFC 3306), not SSM
        ("ff1e::1", False),
        ("ff05::1", False),
    ],
)
def test_is_source_specific(group: str, ssm: bool) -> None:
    assert is_source_specific(parse_group(group)) is ssm


def test_validate_sources_canonical_and_deduplicated() -> None:
    g6 = parse_group("ff3e::1")
    assert validate_sources(g6, ["FD00:1:0::2", "fd00:1::2", "fe80::1"]) == (
        "fd00:1::2",
        "fe80::1",
    )
    assert validate_sources(parse_group("232.1.1.1"), ("10.1.0.1",)) == ("10.1.0.1",)
    assert validate_sources(parse_group("239.1.1.1"), None) == ()


@pytest.mark.parametrize(
    ("group", "sources", "message"),
    [
        ("239.1.2.3", ["10.1.0.1"], "not a source-specific multicast group.*232.0.0.0/8"),
        ("ff05::1", ["fd00::1"], "not a source-specific.*ff3x::/32"),
        ("232.1.2.3", ["10.1.0.1", "fd00::1"], "one address family"),
        ("ff3e::1", ["10.1.0.1"], "IPv4 but group ff3e::1 is IPv6"),
        ("232.1.2.3", "10.1.0.1", "list of addresses"),
        ("232.1.2.3", [], "empty"),
        ("232.1.2.3", ["239.1.1.1"], "unicast"),
        ("232.1.2.3", ["0.0.0.0"], "unicast"),
        ("232.1.2.3", ["host.example"], "not an IP address"),
        ("ff3e::1", ["fe80::1%eth0"], "without a %zone"),
    ],
)
def test_validate_sources_rejects(group: str, sources: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_sources(parse_group(group), sources)  # type: ignore[arg-type]


def test_endpoint_validates_sources_before_touching_the_network() -> None:
    from mcastio import MulticastEndpoint

    with pytest.raises(ValueError, match=r"232\.0\.0\.0/8"):
        MulticastEndpoint("239.1.2.3", 5000, sources=["10.0.0.1"])
    ep = MulticastEndpoint("ff3e::1234", 5000, sources=["fd00::1"])
    assert ep.sources == ("fd00::1",)


@pytest.mark.parametrize(
    ("group", "source", "family"),
    [("232.1.2.3", "10.1.0.1", socket.AF_INET), ("ff3e::1234", "fd00:1::2", socket.AF_INET6)],
)
def test_group_source_req_layout(group: str, source: str, family: int) -> None:
    g = parse_group(group)
    level, opt, raw = receiver._membership(g, Interface("eth1", 7), source)
    assert opt == MCAST_JOIN_SOURCE_GROUP
    assert level == (socket.IPPROTO_IP if family == socket.AF_INET else socket.IPPROTO_IPV6)
    # u32 index, then two sockaddr_storage (128 bytes each) aligned like a pointer.
    align = struct.calcsize("P")
    assert len(raw) == align + 256
    assert struct.unpack_from("=I", raw)[0] == 7
    for offset, addr in ((align, g.address), (align + 128, ipaddress.ip_address(source))):
        assert struct.unpack_from("=H", raw, offset)[0] == family
        start = offset + (4 if family == socket.AF_INET else 8)
        assert raw[start : start + len(addr.packed)] == addr.packed
