"""The portable receive plan and the RFC 3678 joins, as pure values."""

from __future__ import annotations

import ipaddress
import socket
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcastio import MulticastError
from mcastio._model import Interface, parse_group
from mcastio._platform import darwin, freebsd, linux, windows
from mcastio._platform.joins import join_request, leave_request
from mcastio._platform.portable import ReceiveSocket, plan_changes, plan_receive

UNIX = ["linux", "darwin", "freebsd"]


def iface(name: str, index: int, v4: str | None = None, v6: str | None = None) -> Interface:
    return Interface(
        name=name,
        index=index,
        ipv4=(ipaddress.IPv4Interface(v4),) if v4 else (),
        ipv6=(ipaddress.IPv6Interface(v6),) if v6 else (),
    )


IFACES = [
    iface("eth1", 3, "10.0.1.2/24", "fe80::1/64"),
    iface("eth0", 2, "10.0.0.2/24", "2001:db8::2/64"),
    iface("wg0", 5, v6="fd00::5/64"),
]


@pytest.mark.parametrize("platform", UNIX)
def test_unix_one_socket_per_interface_and_group_bound_to_the_group(platform: str) -> None:
    groups = [parse_group("239.1.1.1"), parse_group("239.1.1.2")]
    plan = plan_receive(IFACES, groups, platform=platform)
    assert [(p.interface, p.bind_address, p.group, p.scope) for p in plan] == [
        ("eth0", "239.1.1.1", "239.1.1.1", 0),
        ("eth0", "239.1.1.2", "239.1.1.2", 0),
        ("eth1", "239.1.1.1", "239.1.1.1", 0),
        ("eth1", "239.1.1.2", "239.1.1.2", 0),
        ("wg0", "239.1.1.1", "239.1.1.1", 0),
        ("wg0", "239.1.1.2", "239.1.1.2", 0),
    ]
    assert all(p.groups == (parse_group(p.bind_address),) for p in plan)


@pytest.mark.parametrize("platform", UNIX)
def test_link_scoped_ipv6_binds_with_the_interface_as_scope(platform: str) -> None:
    plan = plan_receive(IFACES, [parse_group("ff02::fb")], platform=platform)
    assert [(p.interface, p.scope) for p in plan] == [("eth0", 2), ("eth1", 3), ("wg0", 5)]


def test_wider_ipv6_is_refused_on_linux_only() -> None:
    with pytest.raises(MulticastError, match="matches IPv6 memberships by address"):
        plan_receive(IFACES, [parse_group("ff05::fb")], platform="linux")
    for platform in ("darwin", "freebsd"):
        plan = plan_receive(IFACES, [parse_group("ff05::fb")], platform=platform)
        assert {p.scope for p in plan} == {0}


def test_windows_one_socket_per_interface_bound_to_its_address() -> None:
    one = plan_receive(IFACES, [parse_group("239.1.1.1")], platform="windows")
    # wg0 has no IPv4 address: nothing to bind to, no socket.
    assert [(p.interface, p.bind_address, p.group) for p in one] == [
        ("eth0", "10.0.0.2", "239.1.1.1"),
        ("eth1", "10.0.1.2", "239.1.1.1"),
    ]
    two = plan_receive(
        IFACES, [parse_group("239.1.1.1"), parse_group("239.1.1.2")], platform="windows"
    )
    assert [p.group for p in two] == [None, None]
    assert all(len(p.groups) == 2 for p in two)
    v6 = plan_receive(IFACES, [parse_group("ff02::fb")], platform="windows")
    assert [(p.interface, p.bind_address, p.scope) for p in v6] == [
        ("eth0", "2001:db8::2", 0),
        ("eth1", "fe80::1", 3),
        ("wg0", "fd00::5", 0),
    ]


def test_one_family_per_plan_and_nothing_for_no_group() -> None:
    with pytest.raises(ValueError, match="one family"):
        plan_receive(IFACES, [parse_group("239.1.1.1"), parse_group("ff02::fb")], platform="linux")
    assert plan_receive(IFACES, [], platform="linux") == ()


ITEMS = st.builds(
    ReceiveSocket,
    interface=st.sampled_from(["eth0", "eth1", "wlan0"]),
    index=st.integers(1, 4),
    family=st.just(socket.AF_INET),
    bind_address=st.sampled_from(["239.1.1.1", "10.0.0.2"]),
    scope=st.just(0),
    groups=st.just((parse_group("239.1.1.1"),)),
    group=st.sampled_from(["239.1.1.1", None]),
)


@given(st.lists(ITEMS, unique=True), st.lists(ITEMS, unique=True))
def test_plan_changes_lead_from_held_to_wanted(
    held: list[ReceiveSocket], wanted: list[ReceiveSocket]
) -> None:
    opened, closed = plan_changes(held, wanted)
    after = (set(held) - set(closed)) | set(opened)
    assert after == set(wanted)
    assert not set(opened) & set(held)
    assert not set(closed) & set(wanted)


# (module, join, leave, join source, leave source, group offset, BSD length byte)
LAYOUTS = {
    "linux": (linux, 42, 45, 46, 47, struct.calcsize("P"), False),
    "darwin": (darwin, 80, 81, 82, 83, 4, True),
    "freebsd": (freebsd, 80, 81, 82, 83, struct.calcsize("P"), True),
    "windows": (windows, 41, 42, 45, 46, 8, False),
}


@pytest.mark.parametrize("platform", sorted(LAYOUTS))
@pytest.mark.parametrize("group", ["239.1.2.3", "ff02::fb"])
def test_join_requests_in_each_os_layout(platform: str, group: str) -> None:
    module, join, leave, join_src, leave_src, offset, bsd = LAYOUTS[platform]
    address = ipaddress.ip_address(group)
    level = 0 if address.version == 4 else 41
    req = join_request(platform, address, 7)
    assert (req.level, req.option, len(req.value)) == (level, join, offset + 128)
    assert leave_request(platform, address, 7)[:2] == (level, leave)
    assert struct.unpack_from("=I", req.value)[0] == 7
    storage = req.value[offset:]
    family = module.AF_INET if address.version == 4 else module.AF_INET6
    if bsd:
        assert storage[:2] == bytes((16 if address.version == 4 else 28, family))
    else:
        assert struct.unpack_from("=H", storage)[0] == family
    at = 4 if address.version == 4 else 8  # sin_addr / sin6_addr
    assert storage[at : at + len(address.packed)] == address.packed
    source = ipaddress.ip_address("10.0.0.1" if address.version == 4 else "fe80::1")
    ssm = join_request(platform, address, 7, source)
    assert (ssm.option, len(ssm.value)) == (join_src, offset + 256)
    assert leave_request(platform, address, 7, source).option == leave_src
    assert source.packed in ssm.value[offset + 128 :]


def test_a_join_needs_an_index_a_known_os_and_one_family() -> None:
    group = ipaddress.ip_address("239.1.2.3")
    with pytest.raises(ValueError, match="interface index"):
        join_request("linux", group, 0)
    with pytest.raises(ValueError, match="no join layout"):
        join_request("sunos5", group, 1)
    with pytest.raises(ValueError, match="different families"):
        join_request("linux", group, 1, ipaddress.ip_address("::1"))
