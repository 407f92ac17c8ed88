"""Parsers for what the kernel's files in /proc say: pure, text in, values out.

The multicast bookkeeping (igmp, igmp6, snmp, route) and the interface facts
(if_inet6's DAD state, wireless).

The files are read with :mod:`.procfs` (by ``_cli.hoststate`` for doctor,
``_hostreport`` for the IGMP version per interface, ``_discovery`` for the
interface facts); everything here takes their contents as a string so it can be
tested with fixtures.
"""

from __future__ import annotations

import ipaddress
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "IgmpDevice",
    "Membership",
    "Route",
    "counter",
    "effective_rp_filter",
    "lookup_route",
    "parse_if_inet6",
    "parse_igmp",
    "parse_igmp6",
    "parse_igmp_versions",
    "parse_netstat",
    "parse_route",
    "parse_wireless",
    "rp_filter_name",
    "usable_v6",
]

# /proc/net/if_inet6's flags column and an RTM_NEWADDR's IFA_FLAGS are the same
# IFA_F_* bits (include/uapi/linux/if_addr.h).
_IFA_F_OPTIMISTIC = 0x04
_IFA_F_DADFAILED = 0x08
_IFA_F_TENTATIVE = 0x40


def usable_v6(flags: int) -> bool:
    """Whether an IPv6 address with these IFA_F_* flags is usable (no DAD pending or failed)."""
    # An optimistic address (RFC 4429) is still tentative but already usable.
    waiting = flags & _IFA_F_TENTATIVE and not flags & _IFA_F_OPTIMISTIC
    return not (waiting or flags & _IFA_F_DADFAILED)


def parse_if_inet6(text: str) -> dict[str, set[ipaddress.IPv6Address]]:
    """Addresses per interface that are *not* usable (tentative or failed DAD)."""
    unusable: dict[str, set[ipaddress.IPv6Address]] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 6:
            continue
        hexaddr, _idx, _plen, _scope, flags, name = parts
        try:
            bits = int(flags, 16)
            address = ipaddress.IPv6Address(bytes.fromhex(hexaddr))
        except ValueError:
            continue  # not what the kernel prints: skipped, like a short line
        if not usable_v6(bits):
            unusable.setdefault(name, set()).add(address)
    return unusable


def parse_wireless(text: str) -> set[str]:
    """The interface names /proc/net/wireless lists (two header lines, then ``name: ...``)."""
    return {line.split(":", 1)[0].strip() for line in text.splitlines()[2:] if ":" in line}


ByteOrder = Literal["little", "big"]


@dataclass(frozen=True, slots=True)
class Membership:
    """One group the kernel has joined on one interface."""

    interface: str
    index: int
    group: ipaddress.IPv4Address | ipaddress.IPv6Address
    users: int


@dataclass(frozen=True, slots=True)
class IgmpDevice:
    """One device block of /proc/net/igmp."""

    interface: str
    index: int
    #: "V1", "V2" or "V3": the IGMP version the kernel speaks there. V1/V2 means it
    #: heard an older querier recently (or force_igmp_version is set) and fell back.
    querier: str
    groups: tuple[Membership, ...]


def _be32(hexword: str, byteorder: ByteOrder) -> ipaddress.IPv4Address:
    """Raises ValueError for anything but 8 hex digits."""
    if len(hexword) != 8:
        raise ValueError(f"not a 32-bit hex word: {hexword!r}")
    # The kernel prints the __be32 address as a host-order integer with %08X.
    return ipaddress.IPv4Address(int(hexword, 16).to_bytes(4, byteorder))


def _int(text: str) -> int | None:
    """A decimal the kernel printed, or None for anything else (str.isdigit takes '²')."""
    return int(text) if text.isascii() and text.isdigit() else None


def parse_igmp(text: str, byteorder: ByteOrder = sys.byteorder) -> tuple[IgmpDevice, ...]:
    """Parse /proc/net/igmp (net/ipv4/igmp.c, igmp_mc_seq_show)."""
    devices: list[IgmpDevice] = []
    current: tuple[str, int, str] | None = None
    groups: list[Membership] = []

    def flush() -> None:
        if current is not None:
            devices.append(IgmpDevice(current[0], current[1], current[2], tuple(groups)))

    for line in text.splitlines()[1:]:
        if not line.strip():
            continue
        if not line.startswith("\t"):
            flush()
            groups = []
            head, _, tail = line.partition(":")
            idx_name = head.split()
            fields = tail.split()
            index = _int(idx_name[0]) if len(idx_name) == 2 else None
            if index is None or len(fields) < 2:
                current = None
                continue
            current = (idx_name[1], index, fields[1])
            continue
        parts = line.split()
        if current is None or len(parts) < 2:
            continue
        users = _int(parts[1])
        try:
            group = _be32(parts[0], byteorder)
        except ValueError:
            continue
        if users is not None:
            groups.append(Membership(current[0], current[1], group, users))
    flush()
    return tuple(devices)


# A device line of /proc/net/igmp: "2\tlo        :     1      V3".
_DEVICE_LINE = re.compile(r"(\d+)\t(\S+)\s*:\s*\d+\s+V(\d)\s*")


def parse_igmp_versions(text: str) -> dict[str, int]:
    """The IGMP version per interface from /proc/net/igmp, skipping the group lines.

    What the keeper needs on every refresh; the group lines, one per membership on
    the host, are most of the file and are not parsed.
    """
    found: dict[str, int] = {}
    for line in text.split("\n"):
        # Group lines start with a tab; only device lines start with a digit.
        if line[:1].isdigit() and (m := _DEVICE_LINE.fullmatch(line)) is not None:
            found[m.group(2)] = int(m.group(3))
    return found


def parse_igmp6(text: str) -> tuple[Membership, ...]:
    """Parse /proc/net/igmp6 (net/ipv6/mcast.c, igmp6_mc_seq_show)."""
    result: list[Membership] = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 4 or len(parts[2]) != 32:
            continue
        index, users = _int(parts[0]), _int(parts[3])
        try:
            group = ipaddress.IPv6Address(bytes.fromhex(parts[2]))
        except ValueError:
            continue
        if index is not None and users is not None:
            result.append(Membership(parts[1], index, group, users))
    return tuple(result)


def parse_netstat(text: str) -> dict[str, int]:
    """Counters from /proc/net/netstat (or /proc/net/snmp), keyed ``"Section.Name"``.

    The file alternates a line of names and a line of values per section.
    """
    counters: dict[str, int] = {}
    lines = text.splitlines()
    for names_line, values_line in zip(lines[::2], lines[1::2], strict=False):
        section, _, names = names_line.partition(":")
        vsection, _, values = values_line.partition(":")
        if section != vsection:
            continue
        for name, value in zip(names.split(), values.split(), strict=False):
            try:
                counters[f"{section}.{name}"] = int(value)
            except ValueError:
                continue
    return counters


def effective_rp_filter(all_value: int | None, iface_value: int | None) -> int:
    """The value the kernel applies: the larger of ``conf.all`` and ``conf.<iface>``."""
    # IN_DEV_RPFILTER is max(IPV4_DEVCONF_ALL(RP_FILTER), IN_DEV_CONF_GET(RP_FILTER)).
    return max(all_value or 0, iface_value or 0)


def rp_filter_name(value: int) -> str:
    return {0: "off", 1: "strict", 2: "loose"}.get(value, f"unknown ({value})")


@dataclass(frozen=True, slots=True)
class Route:
    """One IPv4 route from /proc/net/route (the main table)."""

    interface: str
    network: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Address
    metric: int


_RTF_UP = 0x0001


def parse_route(text: str, byteorder: ByteOrder = sys.byteorder) -> tuple[Route, ...]:
    """Parse /proc/net/route, keeping routes that are up."""
    routes: list[Route] = []
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 8:
            continue
        try:
            flags = int(parts[3], 16)
            dest = _be32(parts[1], byteorder)
            gateway = _be32(parts[2], byteorder)
            mask = _be32(parts[7], byteorder)
            metric = int(parts[6])
            network = ipaddress.IPv4Network(f"{dest}/{mask}", strict=False)
        except ValueError:
            continue
        if flags & _RTF_UP:
            routes.append(Route(parts[0], network, gateway, metric))
    return tuple(routes)


def lookup_route(routes: Iterable[Route], address: ipaddress.IPv4Address) -> Route | None:
    """Longest-prefix match, then lowest metric: the route a reply to ``address`` takes."""
    best: Route | None = None
    for route in routes:
        if address not in route.network:
            continue
        if (
            best is None
            or route.network.prefixlen > best.network.prefixlen
            or (route.network.prefixlen == best.network.prefixlen and route.metric < best.metric)
        ):
            best = route
    return best


def counter(counters: Mapping[str, int], name: str) -> int | None:
    """A counter by bare name, whichever section holds it."""
    for key, value in counters.items():
        if key.rpartition(".")[2] == name:
            return value
    return None
