"""The pktinfo a pinned transmit socket's sends carry: packed as the kernel reads it. Pure."""

from __future__ import annotations

import ipaddress
import socket
import struct

from hypothesis import given
from hypothesis import strategies as st

from mcastio import _net
from mcastio._model import Interface
from mcastio._origin import NO_ORIGIN, Origin
from mcastio._platform.linux.ancillary import IN6_PKTINFO, IN_PKTINFO
from mcastio._txnet import pin

HEADER = struct.Struct("@Nii")


def unpack(packed: bytes) -> tuple[int, int, bytes]:
    """(level, type, data) of one packed cmsg, checking its length fields."""
    length, level, kind = HEADER.unpack_from(packed)
    assert HEADER.size == socket.CMSG_LEN(0)
    assert len(packed) == socket.CMSG_SPACE(length - HEADER.size)
    return level, kind, packed[HEADER.size : length]


@given(
    index=st.integers(1, 2**31 - 1),
    addr=st.ip_addresses(v=4),
    fixed=st.one_of(st.none(), st.ip_addresses(v=4)),
)
def test_ipv4_names_the_index_and_the_source(
    index: int, addr: ipaddress.IPv4Address, fixed: ipaddress.IPv4Address | None
) -> None:
    iface = Interface("eth0", index, ipv4=(ipaddress.IPv4Interface(f"{addr}/24"),))
    origin = Origin(address=str(fixed)) if fixed else NO_ORIGIN
    p = pin(socket.AF_INET, iface, origin)
    assert unpack(p.packed) == p.cmsg
    level, kind, data = p.cmsg
    assert (level, kind) == (socket.IPPROTO_IP, _net.IP_PKTINFO)
    got_index, spec, _ = IN_PKTINFO.unpack(data)
    assert got_index == index
    assert ipaddress.IPv4Address(spec) == (fixed or addr)


def test_ipv4_without_an_address_lets_the_kernel_pick() -> None:
    p = pin(socket.AF_INET, Interface("eth0", 3), NO_ORIGIN)
    assert IN_PKTINFO.unpack(p.cmsg[2]) == (3, bytes(4), bytes(4))


@given(index=st.integers(1, 2**32 - 1), fixed=st.one_of(st.none(), st.ip_addresses(v=6)))
def test_ipv6_names_the_index_and_only_a_fixed_source(
    index: int, fixed: ipaddress.IPv6Address | None
) -> None:
    iface = Interface("eth0", index, ipv6=(ipaddress.IPv6Interface("2001:db8::1/64"),))
    origin = Origin(address=str(fixed)) if fixed else NO_ORIGIN
    p = pin(socket.AF_INET6, iface, origin)
    assert unpack(p.packed) == p.cmsg
    assert p.cmsg[:2] == (socket.IPPROTO_IPV6, _net.IPV6_PKTINFO)
    src, got_index = IN6_PKTINFO.unpack(p.cmsg[2])
    assert got_index == index
    assert src == (fixed.packed if fixed else bytes(16))
