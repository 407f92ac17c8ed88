"""What the kernel says each network device is: one rtnetlink link dump, parsed.

The interface selections (:mod:`._selection`) decide from kernel facts, not from
names: a device's link kind (``veth``, ``bridge``, ``vlan``, ``wireguard``...), the
device it sits on, the bridge it is a port of, and whether a bus device backs it.
Only this module and :mod:`._discovery` read them; the parser is pure.
"""

from __future__ import annotations

import errno
import socket
import struct
from dataclasses import dataclass

__all__ = ["LinkFacts", "parse_link_dump", "read_link_facts"]

RTM_NEWLINK = 16
RTM_GETLINK = 18
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
# include/uapi/linux/if_link.h
IFLA_LINK = 5
IFLA_MASTER = 10
IFLA_LINKINFO = 18
IFLA_INFO_KIND = 1
# Linux >= 5.15: the name of the bus device behind a NIC (/sys/class/net/X/device).
IFLA_PARENT_DEV_NAME = 56
IFLA_LINK_NETNSID = 37
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


def _attrs(data: bytes, start: int, end: int) -> dict[int, bytes]:
    found: dict[int, bytes] = {}
    offset = start
    while offset + _RTATTR.size <= end:
        length, kind = _RTATTR.unpack_from(data, offset)
        if length < _RTATTR.size or offset + length > end:
            break
        found[kind & _NLA_TYPE_MASK] = data[offset + _RTATTR.size : offset + length]
        offset += (length + 3) & ~3
    return found


def _u32(raw: bytes | None) -> int:
    return _U32.unpack_from(raw)[0] if raw is not None and len(raw) >= 4 else 0


def _text(raw: bytes | None) -> str:
    return raw.split(b"\0", 1)[0].decode("ascii", "replace") if raw else ""


def parse_link_dump(data: bytes) -> tuple[list[LinkFacts], bool]:
    """(the devices in one datagram of RTM_NEWLINK messages, whether NLMSG_DONE came)."""
    facts: list[LinkFacts] = []
    done = False
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, kind, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size or offset + length > len(data):
            break
        body = offset + _NLMSGHDR.size
        end = offset + length
        if kind == NLMSG_DONE:
            done = True
        elif kind == NLMSG_ERROR:
            code = -struct.unpack_from("=i", data, body)[0] if body + 4 <= end else errno.EIO
            raise OSError(code, f"link dump refused: {errno.errorcode.get(code, code)}")
        elif kind == RTM_NEWLINK and body + _IFINFOMSG.size <= end:
            _family, arptype, index, _ifflags, _change = _IFINFOMSG.unpack_from(data, body)
            attrs = _attrs(data, body + _IFINFOMSG.size, end)
            info = attrs.get(IFLA_LINKINFO)
            link_kind = _text(_attrs(info, 0, len(info)).get(IFLA_INFO_KIND)) if info else ""
            parent = _u32(attrs.get(IFLA_LINK))
            if link_kind not in _STACKED or IFLA_LINK_NETNSID in attrs:
                # Not a device this one sits on, or one in another namespace.
                parent = 0
            facts.append(
                LinkFacts(
                    index=index,
                    arptype=arptype,
                    kind=link_kind,
                    # A plain device reports no IFLA_LINK or its own index.
                    parent=0 if parent == index else parent,
                    master=_u32(attrs.get(IFLA_MASTER)),
                    bus=IFLA_PARENT_DEV_NAME in attrs,
                )
            )
        offset += (length + 3) & ~3
    return facts, done


def read_link_facts(timeout: float = 1.0) -> dict[int, LinkFacts]:
    """Every device of the calling thread's network namespace, by index.

    Raises ``OSError`` where rtnetlink is unavailable; the snapshot then leaves
    the facts unknown (``Interface.kind`` None).
    """
    if not hasattr(socket, "AF_NETLINK"):
        raise OSError(errno.EAFNOSUPPORT, "AF_NETLINK is not available on this platform")
    with socket.socket(
        socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE
    ) as sock:
        sock.settimeout(timeout)
        sock.bind((0, 0))
        ifinfo = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        header = _NLMSGHDR.pack(
            _NLMSGHDR.size + len(ifinfo), RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, 1, 0
        )
        sock.sendto(header + ifinfo, (0, 0))
        result: dict[int, LinkFacts] = {}
        while True:
            facts, done = parse_link_dump(sock.recv(_READ_SIZE))
            for fact in facts:
                result[fact.index] = fact
            if done:
                return result
