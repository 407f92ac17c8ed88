"""What the kernel says each network device is: one rtnetlink link dump, parsed.

The interface selections (:mod:`._selection`) decide from kernel facts, not from
names: a device's link kind (``veth``, ``bridge``, ``vlan``, ``wireguard``...), the
device it sits on, the bridge it is a port of, and whether a bus device backs it.
Only this module and :mod:`._discovery` read them; the parser is pure.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

__all__ = [
    "Link",
    "LinkFacts",
    "dump",
    "dump_request",
    "messages",
    "names_parent_devices",
    "open_route_socket",
    "parse_link_dump",
    "parse_links",
    "read_link_facts",
]

RTM_NEWLINK = 16
RTM_GETLINK = 18
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
# include/uapi/linux/if_link.h
IFLA_IFNAME = 3
IFLA_LINK = 5
IFLA_MASTER = 10
IFLA_LINKINFO = 18
IFLA_INFO_KIND = 1
# Linux >= 5.15: the name of the bus device behind a NIC (/sys/class/net/X/device).
IFLA_PARENT_DEV_NAME = 56
IFLA_LINK_NETNSID = 37
IFLA_EXT_MASK = 29
# Leave the counters out of the dump: a third of its bytes, and nothing here reads them.
RTEXT_FILTER_SKIP_STATS = 1 << 3
# The attributes a link is read for; the rest (counters, AF_SPEC...) are stepped over.
_WANTED = frozenset(
    {IFLA_IFNAME, IFLA_LINK, IFLA_MASTER, IFLA_LINKINFO, IFLA_LINK_NETNSID, IFLA_PARENT_DEV_NAME}
)
# Kinds whose IFLA_LINK is the device they sit on; a veth's is its peer instead,
# and a tunnel's the device its outer packets leave by.
_STACKED = frozenset({"vlan", "macvlan", "ipvlan", "macvtap", "ipvtap", "macsec"})
# Nested attributes carry NLA_F_NESTED (and maybe NLA_F_NET_BYTEORDER) in the type.
_NLA_TYPE_MASK = 0x3FFF

_NLMSGHDR = struct.Struct("=IHHII")
_IFINFOMSG = struct.Struct("=BxHiII")
_RTATTR = struct.Struct("=HH")
_U32 = struct.Struct("=I")
_READ_SIZE = 1 << 16
_R = TypeVar("_R")


@dataclass(frozen=True, slots=True)
class LinkFacts:
    """One device as the kernel describes it."""

    index: int
    #: ARPHRD_* device type (1: Ethernet, 772: loopback, 65534: none, as wireguard).
    arptype: int
    #: IFLA_INFO_KIND, ``""`` when the device has none (a NIC's own driver).
    kind: str
    #: IFLA_LINK of a VLAN, macvlan, ipvlan or macsec device: the device it sits
    #: on, in this namespace; 0 otherwise.
    parent: int
    #: IFLA_MASTER: the bridge or bond this device is a port of; 0 when none.
    master: int
    #: IFLA_PARENT_DEV_NAME is present: a bus device backs this one.
    bus: bool


@dataclass(frozen=True, slots=True)
class Link:
    """One device of a link dump: its name, its IFF_* flags, and its facts."""

    name: str
    #: ifi_flags: dev_get_flags(), the same word SIOCGIFFLAGS (psutil) returns.
    flags: int
    facts: LinkFacts


def _attrs(
    data: bytes, start: int, end: int, wanted: frozenset[int] | None = None
) -> dict[int, bytes]:
    """The attributes in ``data[start:end]`` by type; only ``wanted`` ones if given."""
    found: dict[int, bytes] = {}
    unpack = _RTATTR.unpack_from
    offset = start
    while offset + 4 <= end:
        length, kind = unpack(data, offset)
        if length < 4 or offset + length > end:
            break
        kind &= _NLA_TYPE_MASK
        if wanted is None or kind in wanted:
            found[kind] = data[offset + 4 : offset + length]
        offset += (length + 3) & ~3
    return found


def _u32(raw: bytes | None) -> int:
    return _U32.unpack_from(raw)[0] if raw is not None and len(raw) >= 4 else 0


def _text(raw: bytes | None) -> str:
    return raw.split(b"\0", 1)[0].decode("ascii", "replace") if raw else ""


def messages(data: bytes, what: str) -> Iterator[tuple[int, int, int]]:
    """(type, start of body, end) of each netlink message in one datagram.

    An NLMSG_ERROR raises ``OSError`` with the kernel's errno; a truncated message
    ends the walk.
    """
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, kind, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size or offset + length > len(data):
            return
        body = offset + _NLMSGHDR.size
        end = offset + length
        if kind == NLMSG_ERROR:
            code = -struct.unpack_from("=i", data, body)[0] if body + 4 <= end else errno.EIO
            raise OSError(code, f"{what} refused: {errno.errorcode.get(code, code)}")
        yield kind, body, end
        offset += (length + 3) & ~3


def parse_links(data: bytes) -> tuple[list[Link], bool]:
    """(the devices in one datagram of RTM_NEWLINK messages, whether NLMSG_DONE came)."""
    links: list[Link] = []
    done = False
    for kind, body, end in messages(data, "link dump"):
        if kind == NLMSG_DONE:
            done = True
        elif kind == RTM_NEWLINK and body + _IFINFOMSG.size <= end:
            _family, arptype, index, ifflags, _change = _IFINFOMSG.unpack_from(data, body)
            attrs = _attrs(data, body + _IFINFOMSG.size, end, _WANTED)
            info = attrs.get(IFLA_LINKINFO)
            link_kind = _text(_attrs(info, 0, len(info)).get(IFLA_INFO_KIND)) if info else ""
            parent = _u32(attrs.get(IFLA_LINK))
            if link_kind not in _STACKED or IFLA_LINK_NETNSID in attrs:
                # Not a device this one sits on, or one in another namespace.
                parent = 0
            facts = LinkFacts(
                index=index,
                arptype=arptype,
                kind=link_kind,
                # A plain device reports no IFLA_LINK or its own index.
                parent=0 if parent == index else parent,
                master=_u32(attrs.get(IFLA_MASTER)),
                bus=IFLA_PARENT_DEV_NAME in attrs,
            )
            name = attrs.get(IFLA_IFNAME)
            # Device names are ASCII-safe bytes in practice; a stray byte must not fail a read.
            text = name.split(b"\0", 1)[0].decode("utf-8", "surrogateescape") if name else ""
            links.append(Link(text, ifflags, facts))
    return links, done


def parse_link_dump(data: bytes) -> tuple[list[LinkFacts], bool]:
    """(the devices' facts in one datagram of RTM_NEWLINK messages, whether NLMSG_DONE came)."""
    links, done = parse_links(data)
    return [link.facts for link in links], done


def dump_request(kind: int, seq: int, family: int = socket.AF_UNSPEC) -> bytes:
    """An rtnetlink dump request: RTM_GETLINK (counters left out) or RTM_GETADDR."""
    if kind == RTM_GETLINK:
        body = _IFINFOMSG.pack(family, 0, 0, 0, 0) + _RTATTR.pack(8, IFLA_EXT_MASK)
        body += _U32.pack(RTEXT_FILTER_SKIP_STATS)
    else:
        # struct ifaddrmsg: family, prefixlen, flags, scope, index.
        body = struct.pack("=BBBBi", family, 0, 0, 0, 0)
    header = _NLMSGHDR.pack(_NLMSGHDR.size + len(body), kind, NLM_F_REQUEST | NLM_F_DUMP, seq, 0)
    return header + body


def open_route_socket(timeout: float) -> socket.socket:
    """A NETLINK_ROUTE socket for dumps; ``OSError`` where there is none."""
    if not hasattr(socket, "AF_NETLINK"):
        raise OSError(errno.EAFNOSUPPORT, "AF_NETLINK is not available on this platform")
    sock = socket.socket(
        socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE
    )
    try:
        sock.settimeout(timeout)
        sock.bind((0, 0))
    except BaseException:
        sock.close()
        raise
    return sock


def dump(
    sock: socket.socket, request: bytes, parse: Callable[[bytes], tuple[list[_R], bool]]
) -> list[_R]:
    """Send one dump request on ``sock``; every record of the answer, in the kernel's order."""
    sock.sendto(request, (0, 0))
    result: list[_R] = []
    while True:
        records, done = parse(sock.recv(_READ_SIZE))
        result += records
        if done:
            return result


def read_link_facts(timeout: float = 1.0) -> dict[int, LinkFacts]:
    """Every device of the calling thread's network namespace, by index.

    Raises ``OSError`` where rtnetlink is unavailable; the snapshot then leaves
    the facts unknown (``Interface.kind`` None).
    """
    with open_route_socket(timeout) as sock:
        facts = dump(sock, dump_request(RTM_GETLINK, 1), parse_link_dump)
    return {fact.index: fact for fact in facts}


def names_parent_devices(release: str | None = None) -> bool:
    """Whether the link dump names every device's parent (IFLA_PARENT_DEV_NAME, Linux 5.15).

    The kernel sends it exactly when the device has a parent, which is when sysfs
    shows the ``device`` link: from 5.15 on, asking sysfs adds nothing.
    """
    text = release if release is not None else os.uname().release
    try:
        major, minor = (int(part) for part in text.split("-", 1)[0].split(".")[:2])
    except ValueError:
        return False  # Not a Linux version string: ask sysfs, as before.
    return (major, minor) >= (5, 15)
