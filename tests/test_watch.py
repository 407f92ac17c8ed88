"""Pure watcher decisions and netlink parsing: no sockets, no event loop."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from mcastio import InterfaceEvent
from mcastio._model import Interface, parse_group, plan_changes
from mcastio._platform.linux.netlink import (
    IFF_LOWER_UP,
    IFF_RUNNING,
    IFF_UP,
    IFLA_CARRIER_UP_COUNT,
    NLMSG_OVERRUN,
    RTM_DELLINK,
    RTM_NEWADDR,
    RTM_NEWLINK,
    parse_messages,
)
from mcastio._platform.linux.procnet import parse_if_inet6
from mcastio._watch import Backoff, CarrierTracker, desired_interfaces, interface_events

G4 = parse_group("239.255.1.1")


def iface(name: str, index: int, *v4: str, running: bool = True, up: bool = True) -> Interface:
    return Interface(
        name=name,
        index=index,
        up=up,
        running=running,
        ipv4=tuple(ipaddress.IPv4Interface(a) for a in v4),
    )


def by_index(*ifaces: Interface) -> dict[int, Interface]:
    return {i.index: i for i in ifaces}


# -- interface_events ------------------------------------------------------------------


def test_events_added_removed_changed() -> None:
    before = by_index(iface("eth0", 2, "10.0.0.1/24"), iface("eth1", 3, "10.0.1.1/24"))
    after = by_index(iface("eth0", 2, "10.0.0.9/24"), iface("eth2", 4, "10.0.2.1/24"))
    events = interface_events(before, after)
    assert events == (
        InterfaceEvent("removed", "eth1", 3, ("10.0.1.1",)),
        InterfaceEvent("changed", "eth0", 2, ("10.0.0.9",)),
        InterfaceEvent("added", "eth2", 4, ("10.0.2.1",)),
    )


def test_events_none_when_only_flags_change() -> None:
    before = by_index(iface("eth0", 2, "10.0.0.1/24"))
    after = by_index(Interface("eth0", 2, is_default=True, ipv4=before[2].ipv4))
    assert interface_events(before, after) == ()


def test_events_second_address_is_a_change() -> None:
    before = by_index(iface("eth0", 2, "10.0.0.1/24"))
    after = by_index(iface("eth0", 2, "10.0.0.1/24", "10.0.0.2/24"))
    (event,) = interface_events(before, after)
    assert event.kind == "changed"
    assert event.addresses == ("10.0.0.1", "10.0.0.2")


def test_events_recreated_same_name_new_index() -> None:
    before = by_index(iface("eth1", 3, "10.0.1.1/24"))
    after = by_index(iface("eth1", 9, "10.0.1.1/24"))
    kinds = [(e.kind, e.index) for e in interface_events(before, after)]
    assert kinds == [("removed", 3), ("added", 9)]


def test_event_is_frozen_and_prints() -> None:
    event = InterfaceEvent("added", "eth3", 7, ("10.0.3.1",))
    with pytest.raises(AttributeError):
        event.name = "x"  # type: ignore[misc]
    assert str(event) == "added eth3 (index 7): 10.0.3.1"


# -- desired_interfaces --------------------------------------------------------------


def test_desired_names_tolerate_a_missing_interface() -> None:
    snap = (iface("eth0", 2, "10.0.0.1/24"),)
    assert desired_interfaces(snap, G4, ["eth0", "usb0"]) == snap
    assert desired_interfaces((), G4, ["usb0"]) == ()


def test_desired_drops_no_carrier_and_admin_down() -> None:
    snap = (
        iface("eth0", 2, "10.0.0.1/24"),
        iface("eth1", 3, "10.0.1.1/24", running=False),
        iface("eth2", 4, "10.0.2.1/24", up=False, running=False),
        iface("eth3", 5),
    )
    assert [i.name for i in desired_interfaces(snap, G4, None)] == ["eth0"]


def test_desired_predicate_selector() -> None:
    snap = (iface("eth0", 2, "10.0.0.1/24"), iface("eth1", 3, "10.0.1.1/24"))
    chosen = desired_interfaces(snap, G4, lambda i: i.name != "eth0")
    assert [i.name for i in chosen] == ["eth1"]


def test_carrier_loss_and_return_plans_leave_then_join() -> None:
    # The re-announce on carrier return rests on this: ineligible, then eligible again.
    up = iface("eth1", 3, "10.0.1.1/24")
    down = iface("eth1", 3, "10.0.1.1/24", running=False)
    plan = plan_changes(by_index(up), desired_interfaces((down,), G4, None), G4.family)
    assert plan.remove == (up,)
    plan = plan_changes({}, desired_interfaces((up,), G4, None), G4.family)
    assert plan.add == (up,)


def test_second_address_needs_no_new_membership() -> None:
    one = iface("eth0", 2, "10.0.0.1/24")
    two = iface("eth0", 2, "10.0.0.1/24", "10.0.0.2/24")
    plan = plan_changes(by_index(one), desired_interfaces((two,), G4, None), G4.family)
    assert (plan.add, plan.remove, plan.change, plan.refresh) == ((), (), (), (two,))


# -- Backoff and CarrierTracker --------------------------------------------------------


def test_backoff_doubles_caps_and_resets() -> None:
    b = Backoff(first=0.5, cap=3.0)
    assert [b.failed() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    b.succeeded()
    assert b.failed() == 0.5
    with pytest.raises(ValueError, match="first"):
        Backoff(first=0)


def test_carrier_tracker_reports_only_returns() -> None:
    t = CarrierTracker()
    t.seed([iface("eth1", 3, "10.0.1.1/24"), iface("eth2", 4, running=False)])
    assert t.update(3, True) is False  # still up: nothing to do
    assert t.update(3, False) is False
    assert t.update(3, True) is True
    assert t.update(4, True) is True  # seeded without carrier
    assert t.update(9, True) is False  # never seen before: it is an addition, not a return
    t.update(3, False, deleted=True)
    assert t.update(3, True) is False


def test_carrier_tracker_sees_a_flap_through_the_counter() -> None:
    t = CarrierTracker()
    assert t.update(3, True, carrier_ups=1) is False  # first sight: a baseline
    assert t.update(3, True, carrier_ups=1) is False  # an address or MTU change
    # Down and up between two notifications: flags never showed it, the counter did.
    assert t.update(3, True, carrier_ups=2) is True
    assert t.update(3, False, carrier_ups=2) is False


# -- netlink parsing -------------------------------------------------------------------


def _nlmsg(kind: int, body: bytes) -> bytes:
    length = 16 + len(body)
    pad = b"\0" * ((4 - length % 4) % 4)
    return struct.pack("=IHHII", length, kind, 0, 0, 0) + body + pad


def _ifinfo(index: int, flags: int, carrier_ups: int | None = None) -> bytes:
    body = struct.pack("=BxHiII", 0, 1, index, flags, 0)
    # An unrelated attribute first (IFLA_IFNAME, padded), then the counter.
    body += struct.pack("=HH", 9, 3) + b"eth1\0" + b"\0" * 3
    if carrier_ups is not None:
        body += struct.pack("=HHI", 8, IFLA_CARRIER_UP_COUNT, carrier_ups)
    return body


def test_parse_link_messages_and_flags() -> None:
    data = (
        _nlmsg(RTM_NEWLINK, _ifinfo(3, IFF_UP | IFF_RUNNING | IFF_LOWER_UP) + b"\x01\x02")
        + _nlmsg(RTM_NEWADDR, b"\0" * 8)
        + _nlmsg(RTM_NEWLINK, _ifinfo(4, IFF_UP))
        + _nlmsg(RTM_DELLINK, _ifinfo(5, 0))
    )
    count, overrun, links = parse_messages(data)
    assert count == 4
    assert not overrun
    assert [(link.index, link.carrier, link.deleted) for link in links] == [
        (3, True, False),
        (4, False, False),
        (5, False, True),
    ]
    assert [link.carrier_ups for link in links] == [None, None, None]


def test_parse_carrier_up_counter() -> None:
    data = _nlmsg(RTM_NEWLINK, _ifinfo(3, IFF_UP | IFF_LOWER_UP, carrier_ups=7))
    _count, _overrun, (link,) = parse_messages(data)
    assert (link.index, link.carrier_ups) == (3, 7)


def test_parse_stops_at_truncated_message_and_sees_overrun() -> None:
    good = _nlmsg(NLMSG_OVERRUN, b"")
    truncated = struct.pack("=IHHII", 200, RTM_NEWLINK, 0, 0, 0) + b"\0" * 8
    count, overrun, links = parse_messages(good + truncated)
    assert (count, overrun, links) == (1, True, [])


# -- tentative IPv6 addresses ------------------------------------------------------------


def test_tentative_and_dadfailed_v6_are_unusable() -> None:
    text = (
        "fd000001000000000000000000000001 03 40 00 c0     eth1\n"  # tentative
        "fd000002000000000000000000000001 04 40 00 88     eth2\n"  # dadfailed + permanent
        "fd000003000000000000000000000001 05 40 00 80     eth3\n"  # permanent, usable
    )
    unusable = parse_if_inet6(text)
    assert unusable == {
        "eth1": {ipaddress.IPv6Address("fd00:1::1")},
        "eth2": {ipaddress.IPv6Address("fd00:2::1")},
    }
