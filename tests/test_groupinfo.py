"""Group scope, RFC 1112 MAC mapping and MAC collisions."""

from __future__ import annotations

import ipaddress

from mcastio._cli.groupinfo import ethernet_mac, mac_collisions, mac_siblings, scope_summary
from mcastio._model import parse_group

V4 = ipaddress.IPv4Address


def test_ethernet_mac_keeps_the_low_23_bits() -> None:
    assert ethernet_mac(V4("239.255.0.1")) == "01:00:5e:7f:00:01"
    assert ethernet_mac(V4("224.0.0.251")) == "01:00:5e:00:00:fb"
    assert ethernet_mac(V4("224.128.0.251")) == "01:00:5e:00:00:fb"
    assert ethernet_mac(ipaddress.IPv6Address("ff02::1:ff00:2")) == "33:33:ff:00:00:02"


def test_mac_siblings_are_the_31_other_groups_on_the_same_mac() -> None:
    group = V4("239.255.0.1")
    siblings = mac_siblings(group)
    assert len(siblings) == 31
    assert group not in siblings
    assert len(set(siblings)) == 31
    assert all(s.is_multicast for s in siblings)
    assert {ethernet_mac(s) for s in siblings} == {ethernet_mac(group)}
    assert V4("224.127.0.1") in siblings


def test_scope_summary_by_range() -> None:
    assert "link-local" in scope_summary(parse_group("224.0.0.251"))
    assert "RFC 2365" in scope_summary(parse_group("239.1.2.3"))
    assert "SSM" in scope_summary(parse_group("232.1.1.1"))
    assert "globally" in scope_summary(parse_group("225.1.1.1"))
    assert "scope field 5" in scope_summary(parse_group("ff05::1:3"))


def test_mac_collisions_only_within_one_interface() -> None:
    pairs = [
        ("eth0", V4("239.1.1.1")),
        ("eth0", V4("224.129.1.1")),
        ("eth0", V4("239.1.1.2")),
        ("eth1", V4("239.1.1.1")),
        ("eth2", V4("224.129.1.1")),
    ]
    collisions = mac_collisions(pairs)
    assert len(collisions) == 1
    assert collisions[0].interface == "eth0"
    assert collisions[0].mac == "01:00:5e:01:01:01"
    assert collisions[0].groups == (V4("224.129.1.1"), V4("239.1.1.1"))
    assert mac_collisions([("eth0", V4("239.1.1.1")), ("eth0", V4("239.1.1.1"))]) == ()
