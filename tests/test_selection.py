"""Pure decisions of issue 17: interface selections, the link dump parser, several groups."""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mcastio
from mcastio import link_with_vlans, no_virtual_links, physical_links
from mcastio._model import Interface, parse_group, parse_groups, select_for_groups
from mcastio._platform.linux.linkfacts import LinkFacts, parse_link_dump
from mcastio._platform.linux.procnet import parse_wireless
from mcastio._selection import CONTAINER_VM_VPN_KINDS, Selection, default_route_links


def nic(name: str, index: int, kind: str | None = "", **kw: object) -> Interface:
    return Interface(
        name=name,
        index=index,
        ipv4=(ipaddress.IPv4Interface(f"10.0.{index}.1/24"),),
        kind=kind,
        **kw,  # type: ignore[arg-type]
    )


HOST = (
    Interface("lo", 1, loopback=True, kind=""),
    nic("enp3s0", 2, bus=True, is_default=True),
    nic("wlp2s0", 3, bus=True, wireless=True),
    nic("docker0", 4, "bridge"),
    nic("veth1a2b", 5, "veth", master=4),
    nic("br-5f3c", 6, "bridge"),
    nic("virbr0", 7, "bridge"),
    nic("vnet0", 8, "tun", master=7),
    nic("wg0", 9, "wireguard"),
    nic("tailscale0", 10, "tun"),
    nic("enp3s0.20", 11, "vlan", parent=2),
    nic("enp3s0.20.5", 12, "vlan", parent=11),
    nic("br0", 13, "bridge"),
    nic("eno2", 14, bus=True, master=13),
    nic("bond0", 15, "bond"),
    nic("eno3", 16, bus=True, master=15),
    nic("eno4", 17, bus=True, master=15),
    nic("flannel.1", 18, "vxlan"),
    nic("veth9.7", 19, "vlan", parent=5),
    nic("mystery", 20, "hsr"),
)


def names(selection: Selection, snapshot: tuple[Interface, ...] = HOST) -> list[str]:
    keep = selection.pick(snapshot)
    return [i.name for i in snapshot if i.index in keep]


def test_physical_links_are_nics_and_wifi() -> None:
    assert names(physical_links()) == ["enp3s0", "wlp2s0", "eno2", "eno3", "eno4"]


def test_no_virtual_links_drop_container_vm_and_vpn_devices() -> None:
    assert names(no_virtual_links()) == [
        "enp3s0",
        "wlp2s0",
        "enp3s0.20",
        "enp3s0.20.5",
        "br0",  # a LAN bridge: a NIC is one of its ports
        "eno2",
        "bond0",
        "eno3",
        "eno4",
        "mystery",  # a kind not listed is a real link
    ]


def test_link_with_vlans_follows_stacked_vlans_only() -> None:
    assert names(link_with_vlans("enp3s0")) == ["enp3s0", "enp3s0.20", "enp3s0.20.5"]
    assert names(link_with_vlans("veth1a2b")) == ["veth1a2b", "veth9.7"]
    assert names(link_with_vlans("absent")) == []
    with pytest.raises(ValueError, match="interface name"):
        link_with_vlans("")


def test_default_route_links() -> None:
    assert names(default_route_links()) == ["enp3s0"]


def test_without_kernel_facts_names_decide() -> None:
    snap = tuple(
        nic(n, i, None) for i, n in enumerate(["eth0", "docker0", "veth1", "wg0", "eth0.7"], 2)
    )
    assert names(no_virtual_links(), snap) == ["eth0", "eth0.7"]
    assert names(physical_links(), snap) == ["eth0", "eth0.7"]
    assert names(link_with_vlans("eth0"), snap) == ["eth0", "eth0.7"]


def test_a_selection_is_usable_as_interfaces_and_keeps_eligibility() -> None:
    g = parse_group("239.255.0.1")
    down = nic("eno9", 30, bus=True, up=False)
    chosen = select_for_groups((*HOST, down), [g], physical_links())
    assert [i.name for i in chosen] == ["enp3s0", "wlp2s0", "eno2", "eno3", "eno4"]
    assert str(link_with_vlans("eth0")) == "link_with_vlans('eth0')"


kinds = st.sampled_from(
    [None, "", "veth", "bridge", "vlan", "bond", "tun", "wireguard", "vxlan", "macvlan"]
)


@st.composite
def snapshots(draw: st.DrawFn) -> tuple[Interface, ...]:
    count = draw(st.integers(1, 12))
    result = []
    for index in range(1, count + 1):
        result.append(
            Interface(
                name=draw(st.sampled_from(["eth", "docker", "veth", "wg", "br-", "en"]))
                + str(index),
                index=index,
                loopback=draw(st.booleans()),
                kind=draw(kinds),
                # Any index, also itself or a cycle: the decisions must still end.
                parent=draw(st.integers(0, count + 1)),
                master=draw(st.integers(0, count + 1)),
                bus=draw(st.booleans()),
                wireless=draw(st.booleans()),
            )
        )
    return tuple(result)


@settings(max_examples=120, deadline=None)
@given(snapshots(), st.integers(1, 12))
def test_selection_properties(snap: tuple[Interface, ...], root: int) -> None:
    indexes = {i.index for i in snap}
    by_index = {i.index: i for i in snap}
    for selection in (physical_links(), no_virtual_links(), default_route_links()):
        assert set(selection.pick(snap)) <= indexes
    kept = no_virtual_links().pick(snap)
    for i in snap:
        if i.index in kept:
            assert not i.loopback
            assert i.kind not in CONTAINER_VM_VPN_KINDS
    for index in physical_links().pick(snap):
        assert not by_index[index].loopback
    if root in by_index:
        name = by_index[root].name
        vlans = link_with_vlans(name).pick(snap)
        assert root in vlans
        for index in vlans - {root}:
            iface = by_index[index]
            assert iface.kind == "vlan" or (iface.kind is None and iface.name.startswith(name))


# -- the rtnetlink link dump ----------------------------------------------------------


def _attr(kind: int, payload: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def _newlink(index: int, *attrs: bytes, arptype: int = 1) -> bytes:
    body = struct.pack("=BxHiII", 0, arptype, index, 0, 0) + b"".join(attrs)
    return struct.pack("=IHHII", 16 + len(body), 16, 2, 1, 0) + body


DONE = struct.pack("=IHHII", 20, 3, 2, 1, 0) + b"\0" * 4


def test_parse_link_dump_reads_kind_parent_master_and_bus() -> None:
    vlan = _newlink(
        7,
        _attr(3, b"eth0.7\0"),
        _attr(5, struct.pack("=I", 2)),
        _attr(18 | 0x8000, _attr(1, b"vlan\0") + _attr(2, b"\0" * 8)),
    )
    port = _newlink(8, _attr(10, struct.pack("=I", 4)), _attr(18, _attr(1, b"veth\0")),
                    _attr(5, struct.pack("=I", 3)), _attr(37, struct.pack("=i", 0)))  # fmt: skip
    card = _newlink(2, _attr(56, b"0000:00:1f.6\0"), _attr(5, struct.pack("=I", 2)))
    facts, done = parse_link_dump(vlan + port + card + DONE)
    assert done
    assert facts == [
        LinkFacts(7, 1, "vlan", 2, 0, False),
        # A veth's IFLA_LINK is its peer, here in another namespace: not a parent.
        LinkFacts(8, 1, "veth", 0, 4, False),
        LinkFacts(2, 1, "", 0, 0, True),
    ]


def test_parse_link_dump_error_and_garbage() -> None:
    error = struct.pack("=IHHII", 20, 2, 0, 1, 0) + struct.pack("=i", -errno.EPERM)
    with pytest.raises(OSError, match="refused") as info:
        parse_link_dump(error)
    assert info.value.errno == errno.EPERM
    assert parse_link_dump(b"") == ([], False)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_parse_link_dump_never_crashes(data: bytes) -> None:
    try:
        facts, _done = parse_link_dump(data)
    except OSError:
        return
    assert all(isinstance(f, LinkFacts) for f in facts)


def test_parse_wireless() -> None:
    text = (
        "Inter-| sta-|   Quality        |   Discarded packets               | Missed | WE\n"
        " face | tus | link level noise |  nwid  crypt   frag  retry   misc | beacon | 22\n"
        "wlp2s0: 0000   70.  -40.  -256        0      0      0      0     12        0\n"
    )
    assert parse_wireless(text) == {"wlp2s0"}
    assert parse_wireless("") == set()


# -- several groups ------------------------------------------------------------------


def test_parse_groups() -> None:
    assert [str(g) for g in parse_groups("239.1.1.1")] == ["239.1.1.1"]
    assert [str(g) for g in parse_groups(["239.1.1.2", "239.1.1.1"])] == ["239.1.1.2", "239.1.1.1"]
    with pytest.raises(ValueError, match="mix IPv4 and IPv6"):
        parse_groups(["239.1.1.1", "ff05::1"])
    with pytest.raises(ValueError, match="twice"):
        parse_groups(["239.1.1.1", "239.1.1.1"])
    with pytest.raises(ValueError, match="no group"):
        parse_groups([])
    with pytest.raises(ValueError, match="not a multicast"):
        parse_groups(["239.1.1.1", "10.0.0.1"])


def test_an_interface_must_carry_every_group() -> None:
    link_only = Interface("eth0", 2, ipv6=(ipaddress.IPv6Interface("fe80::1/64"),), kind="")
    routable = Interface("eth1", 3, ipv6=(ipaddress.IPv6Interface("fd00::1/64"),), kind="")
    snap = (link_only, routable)
    link, site = parse_group("ff02::fb"), parse_group("ff05::c")
    assert [i.name for i in select_for_groups(snap, [link], None)] == ["eth0", "eth1"]
    assert [i.name for i in select_for_groups(snap, [link, site], None)] == ["eth1"]
    assert link.family == socket.AF_INET6


def test_endpoint_groups_before_start() -> None:
    from mcastio import MulticastEndpoint

    one = MulticastEndpoint("239.1.1.1", 5000)
    assert (one.group, one.groups, one.joins) == ("239.1.1.1", ("239.1.1.1",), True)
    two = MulticastEndpoint(["239.1.1.1", "239.1.1.2"], 5000, join=False)
    assert two.groups == ("239.1.1.1", "239.1.1.2")
    assert not two.joins
    assert "send-only" in repr(two)
    with pytest.raises(ValueError, match=r"use \.groups"):
        _ = two.group
    with pytest.raises(ValueError, match="mix IPv4 and IPv6"):
        MulticastEndpoint(["239.1.1.1", "ff05::1"], 5000)
    with pytest.raises(TypeError, match="join must be True or False"):
        MulticastEndpoint("239.1.1.1", 5000, join="no")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a source-specific"):
        MulticastEndpoint(["232.1.1.1", "239.1.1.1"], 5000, sources=["10.0.0.1"])


def test_kernel_facts_agree_with_sysfs() -> None:
    """On this host: the rtnetlink facts say what /sys/class/net says, where sysfs
    shows this network namespace (its ifindex matches)."""
    import os

    from mcastio._discovery import read_snapshot

    checked = 0
    for iface in read_snapshot():
        base = f"/sys/class/net/{iface.name}"
        try:
            with open(f"{base}/ifindex", encoding="ascii") as f:
                if int(f.read()) != iface.index:
                    continue
        except OSError:
            continue
        checked += 1
        assert iface.kind is not None
        assert iface.bus == os.path.exists(f"{base}/device"), iface
        assert (iface.kind == "bridge") == os.path.exists(f"{base}/bridge"), iface
        if iface.loopback:
            assert not iface.bus
    print(f"checked {checked} interfaces against sysfs")


def test_groups_added_before_start_get_their_keeper() -> None:
    import asyncio

    from mcastio import MulticastEndpoint

    async def main() -> None:
        ep = MulticastEndpoint("239.1.1.1", 5000, snapshot_source=tuple, watch=False)
        await ep.add_group("239.1.1.2")
        assert ep.groups == ("239.1.1.1", "239.1.1.2")
        assert set(ep._engine.keepalives) == set(ep._engine.groups)
        await ep.aclose()
        with pytest.raises(mcastio.EndpointClosedError):
            await ep.add_group("239.1.1.3")

    asyncio.run(main())
