"""The rtnetlink host dump: its address parser, its link names and flags, and the
snapshot built from them (pure; the lab proof is in test_hostdump_lab.py)."""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcastio._model import Interface
from mcastio._platform.linux.hostdump import Address, parse_addr_dump
from mcastio._platform.linux.linkfacts import Link, LinkFacts, names_parent_devices, parse_links
from mcastio._platform.linux.snapshot import snapshot_from_dump

DONE = struct.pack("=IHHII", 20, 3, 2, 1, 0) + b"\0" * 4


def _attr(kind: int, payload: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def _message(kind: int, body: bytes) -> bytes:
    return struct.pack("=IHHII", 16 + len(body), kind, 2, 1, 0) + body


def _newaddr(a: Address, peer: bytes | None = None, long_flags: bool = True) -> bytes:
    attrs = []
    if peer is not None:
        # Point-to-point: IFA_ADDRESS is the peer, IFA_LOCAL the address.
        attrs += [_attr(1, peer), _attr(2, a.packed)]
    else:
        attrs.append(_attr(1, a.packed))
    if a.label:
        attrs.append(_attr(3, a.label.encode() + b"\0"))
    if long_flags:
        attrs.append(_attr(8, struct.pack("=I", a.flags)))
    head = struct.pack("=BBBBi", a.family, a.prefixlen, a.flags & 0xFF, 0, a.index)
    return _message(20, head + b"".join(attrs))


ADDRESS = st.one_of(
    st.builds(
        Address,
        index=st.integers(1, 2**31 - 1),
        family=st.just(int(socket.AF_INET)),
        packed=st.binary(min_size=4, max_size=4),
        prefixlen=st.integers(0, 32),
        flags=st.integers(0, 2**32 - 1),
        label=st.text(alphabet="abcdefgh0123456789:.", min_size=1, max_size=15),
    ),
    st.builds(
        Address,
        index=st.integers(1, 2**31 - 1),
        family=st.just(int(socket.AF_INET6)),
        packed=st.binary(min_size=16, max_size=16),
        prefixlen=st.integers(0, 128),
        flags=st.integers(0, 2**32 - 1),
        label=st.just(""),
    ),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(ADDRESS, st.booleans()), max_size=8), st.integers(0, 3))
def test_parse_addr_dump_reads_back_what_was_encoded(
    cases: list[tuple[Address, bool]], cut: int
) -> None:
    wire = [_newaddr(a, peer=b"\x0a\0\0\x09" if ptp and a.family == socket.AF_INET else None)
            for a, ptp in cases]  # fmt: skip
    parsed, done = parse_addr_dump(b"".join(wire) + DONE)
    assert done
    assert parsed == [a for a, _ in cases]
    # A datagram cut short: the whole messages before the cut, no DONE, no error.
    whole = b"".join(wire[:cut])
    partial, done = parse_addr_dump(whole + DONE[:10])
    assert not done
    assert partial == [a for a, _ in cases[:cut]]


def test_parse_addr_dump_short_flags_and_skipped_records() -> None:
    a = Address(3, socket.AF_INET6, bytes(15) + b"\1", 64, 0x40, "")
    assert parse_addr_dump(_newaddr(a, long_flags=False))[0] == [a]
    # A family with no address of its own, and an IPv4 record holding 16 bytes, are left out.
    other = _message(20, struct.pack("=BBBBi", 17, 0, 0, 0, 3) + _attr(1, b"\0" * 6))
    wrong = _message(20, struct.pack("=BBBBi", 2, 24, 0, 0, 3) + _attr(1, b"\0" * 16))
    assert parse_addr_dump(other + wrong) == ([], False)
    error = struct.pack("=IHHII", 20, 2, 0, 1, 0) + struct.pack("=i", -errno.EBUSY)
    with pytest.raises(OSError, match="address dump refused") as info:
        parse_addr_dump(error)
    assert info.value.errno == errno.EBUSY


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_parse_addr_dump_never_crashes(data: bytes) -> None:
    try:
        found, _done = parse_addr_dump(data)
    except OSError:
        return
    for a in found:
        assert len(a.packed) == (4 if a.family == socket.AF_INET else 16)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(1, 2**31 - 1),
            st.text(alphabet="abcxyz0123456789.-_@", min_size=1, max_size=15),
            st.integers(0, 2**32 - 1),
            st.integers(0, 30),
        ),
        max_size=6,
    )
)
def test_parse_links_reads_name_flags_and_steps_over_other_attributes(
    rows: list[tuple[int, str, int, int]],
) -> None:
    wire = b""
    for index, name, flags, padding in rows:
        # Attributes nobody reads, before and after the name (as the counters are).
        body = struct.pack("=BxHiII", 0, 1, index, flags, 0)
        body += _attr(4, b"\0" * padding) + _attr(3, name.encode() + b"\0") + _attr(7, b"x" * 3)
        wire += _message(16, body)
    links, done = parse_links(wire + DONE)
    assert done
    assert [(lk.facts.index, lk.name, lk.flags) for lk in links] == [r[:3] for r in rows]


def _link(index: int, name: str, flags: int, kind: str = "veth", bus: bool = False) -> Link:
    return Link(name, flags, LinkFacts(index, 1, kind, 0, 0, bus))


UP_RUNNING_MC = 0x1 | 0x40 | 0x1000


@pytest.mark.parametrize("bus_known", [False, True])
def test_snapshot_from_dump_labels_flags_and_dad_states(bus_known: bool) -> None:
    v4 = socket.AF_INET
    v6 = socket.AF_INET6
    links = [
        _link(2, "eth0", UP_RUNNING_MC, "", bus=True),
        _link(1, "lo", 0x1 | 0x8 | 0x40, ""),
        _link(3, "veth0", UP_RUNNING_MC, "veth"),
    ]
    addresses = [
        Address(2, v4, bytes([10, 0, 0, 9]), 32, 0, "eth0:b"),
        Address(2, v4, bytes([10, 0, 0, 8]), 32, 0, "eth0:a"),
        Address(2, v4, bytes([10, 0, 0, 1]), 24, 0, "eth0"),
        Address(2, v6, bytes.fromhex("fd00" + "00" * 13 + "01"), 64, 0x80, ""),
        Address(2, v6, bytes.fromhex("fd00" + "00" * 13 + "02"), 64, 0x40, ""),  # tentative
        Address(2, v6, bytes.fromhex("fd00" + "00" * 13 + "03"), 64, 0x44, ""),  # optimistic
        Address(2, v6, bytes.fromhex("fd00" + "00" * 13 + "04"), 64, 0x08, ""),  # DAD failed
        Address(9, v4, bytes([10, 9, 9, 9]), 24, 0, "gone"),  # its device went meanwhile
        Address(1, v4, bytes([127, 0, 0, 1]), 8, 0, "lo"),
    ]
    asked: list[tuple[str, int, tuple[str, ...]]] = []

    def sysfs(name: str, index: int, entries: tuple[str, ...]) -> bool:
        asked.append((name, index, entries))
        return name in ("eth0", "veth0") and "phy80211" in entries

    snap = snapshot_from_dump(links, addresses, {"eth0"}, set(), sysfs, bus_known=bus_known)
    lo, eth0, veth0 = snap
    assert lo == Interface(
        "lo", 1, up=True, running=True, multicast=False, loopback=True,
        ipv4=(ipaddress.IPv4Interface("127.0.0.1/8"),), kind="", wireless=False,
    )  # fmt: skip
    assert [str(a) for a in eth0.ipv4] == ["10.0.0.1/24", "10.0.0.8/32", "10.0.0.9/32"]
    assert [str(a) for a in eth0.ipv6] == ["fd00::1/64", "fd00::3/64"]
    assert (eth0.up, eth0.running, eth0.multicast, eth0.loopback) == (True, True, True, False)
    assert (eth0.is_default, eth0.bus, eth0.wireless, eth0.kind) == (True, True, True, "")
    # A veth is never wifi: sysfs is not asked (whatever it would say).
    assert (veth0.wireless, veth0.ipv4, veth0.up) == (False, (), True)
    assert not any(name == "veth0" and "phy80211" in entries for name, _i, entries in asked)
    # The bus came from the dump: sysfs was asked only what the dump cannot say.
    assert ("eth0", 2, ("device",)) not in asked
    assert (("lo", 1, ("device",)) in asked) is not bus_known
    assert ("lo", 1, ("wireless", "phy80211")) in asked


@pytest.mark.parametrize(
    ("release", "known"),
    [("6.18.44-fc-v1252", True), ("5.15.0-91-generic", True), ("5.14.21", False),
     ("4.19.0", False), ("6", False), ("x.y", False), ("10.0", True)],
)  # fmt: skip
def test_kernels_that_name_parent_devices(release: str, known: bool) -> None:
    assert names_parent_devices(release) is known
