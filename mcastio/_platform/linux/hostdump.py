"""The host's devices and addresses from two rtnetlink dumps on one socket.

psutil and ``if_nameindex`` read the same kernel tables a second and third time
(getifaddrs is itself a link and an address dump, net_if_stats one ioctl per
device): on a thousand links that was most of a host read. One link dump gives
every device's index, name, flags and facts; one address dump every address,
its prefix length, label and DAD state. The parser is pure.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from .linkfacts import (
    _RTATTR,
    NLMSG_DONE,
    RTM_GETLINK,
    Link,
    dump,
    dump_request,
    messages,
    open_route_socket,
    parse_links,
)

__all__ = ["Address", "parse_addr_dump", "read_host"]

RTM_NEWADDR = 20
RTM_GETADDR = 22
# include/uapi/linux/if_addr.h
IFA_ADDRESS = 1
IFA_LOCAL = 2
IFA_LABEL = 3
IFA_FLAGS = 8

_IFADDRMSG = struct.Struct("=BBBBi")
_U32 = struct.Struct("=I")
_SIZES = {socket.AF_INET: 4, socket.AF_INET6: 16}


@dataclass(frozen=True, slots=True)
class Address:
    """One address of a device, as the kernel lists it."""

    index: int
    family: int
    #: The address in network order: IFA_LOCAL where there is one (the peer is
    #: IFA_ADDRESS on a point-to-point link), else IFA_ADDRESS, as getifaddrs does.
    packed: bytes
    prefixlen: int
    #: IFA_F_* (IFA_FLAGS, which carries all 32 bits, where the kernel sends it).
    flags: int
    #: IFA_LABEL (IPv4: ``eth0`` or a label ``eth0:1``); ``""`` when absent (IPv6).
    label: str


def parse_addr_dump(data: bytes) -> tuple[list[Address], bool]:
    """(the addresses in one datagram of RTM_NEWADDR messages, whether NLMSG_DONE came).

    Only IPv4 and IPv6 addresses of the right length are kept.
    """
    found: list[Address] = []
    done = False
    unpack = _RTATTR.unpack_from
    for kind, body, end in messages(data, "address dump"):
        if kind == NLMSG_DONE:
            done = True
            continue
        if kind != RTM_NEWADDR or body + _IFADDRMSG.size > end:
            continue
        family, prefixlen, flags, _scope, index = _IFADDRMSG.unpack_from(data, body)
        size = _SIZES.get(family)
        if size is None:
            continue
        address = local = label = None
        offset = body + _IFADDRMSG.size
        while offset + 4 <= end:
            length, attr = unpack(data, offset)
            if length < 4 or offset + length > end:
                break
            value = data[offset + 4 : offset + length]
            if attr == IFA_ADDRESS:
                address = value
            elif attr == IFA_LOCAL:
                local = value
            elif attr == IFA_LABEL:
                label = value
            elif attr == IFA_FLAGS and len(value) >= 4:
                flags = _U32.unpack_from(value)[0]
            offset += (length + 3) & ~3
        packed = local if local is not None else address
        if packed is None or len(packed) != size or prefixlen > size * 8:
            continue
        text = label.split(b"\0", 1)[0].decode("utf-8", "surrogateescape") if label else ""
        found.append(Address(index, family, packed, prefixlen, flags, text))
    return found, done


def read_host(timeout: float = 1.0) -> tuple[list[Link], list[Address]]:
    """Every device and every address of the calling thread's network namespace.

    ``OSError`` where rtnetlink is unavailable or refuses (the caller falls back).
    """
    with open_route_socket(timeout) as sock:
        links = dump(sock, dump_request(RTM_GETLINK, 1), parse_links)
        addresses = dump(sock, dump_request(RTM_GETADDR, 2), parse_addr_dump)
    return links, addresses
