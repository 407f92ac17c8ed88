"""Pure values and decisions: no sockets, no asyncio, no reads of the host.

Everything here takes its inputs as arguments (snapshots, options) so it can be
tested in microseconds, in the style of h11's state machine.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeGuard

__all__ = [
    "MAX_PAYLOAD_V4",
    "MAX_PAYLOAD_V6",
    "Datagram",
    "Group",
    "Interface",
    "InterfaceSelector",
    "Plan",
    "SendResult",
    "SnapshotSelector",
    "ineligibility",
    "is_eligible",
    "is_source_specific",
    "parse_group",
    "parse_groups",
    "plan_changes",
    "select_for_groups",
    "select_interfaces",
    "tx_source",
    "validate_payload",
    "validate_selector",
    "validate_sources",
]

# 65535 minus the 20-byte IPv4 header and the 8-byte UDP header.
MAX_PAYLOAD_V4 = 65507
# 65535 minus the 8-byte UDP header; the IPv6 header is not counted in the payload length.
MAX_PAYLOAD_V6 = 65527

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Group:
    """A validated multicast group address."""

    address: IPAddress
    family: socket.AddressFamily
    scope: str

    def __str__(self) -> str:
        return str(self.address)

    @property
    def link_scoped(self) -> bool:
        return self.scope in ("link-local", "interface-local")

    @property
    def max_payload(self) -> int:
        return MAX_PAYLOAD_V4 if self.family == socket.AF_INET else MAX_PAYLOAD_V6


_V6_SCOPES = {
    0x1: "interface-local",
    0x2: "link-local",
    0x3: "realm-local",
    0x4: "admin-local",
    0x5: "site-local",
    0x8: "organization-local",
    0xE: "global",
}


def _v4_scope(addr: ipaddress.IPv4Address) -> str:
    if addr in ipaddress.IPv4Network("224.0.0.0/24"):
        return "link-local"
    if addr in ipaddress.IPv4Network("232.0.0.0/8"):
        return "source-specific"
    if addr in ipaddress.IPv4Network("239.0.0.0/8"):
        return "administrative"
    return "global"


def parse_group(group: str) -> Group:
    """Parse and check a multicast group, raising ``ValueError`` a user can act on."""
    if not isinstance(group, str):
        raise ValueError(f"group must be a string such as '239.255.0.1', not {group!r}")
    if "%" in group:
        # The endpoint joins and sends on every selected interface; a zone would be
        # ignored for the joins and break every send if it names no interface.
        raise ValueError(
            f"group {group!r} must not carry a %zone; choose interfaces with "
            "interfaces=[...] instead"
        )
    try:
        addr = ipaddress.ip_address(group.strip())
    except ValueError as exc:
        raise ValueError(
            f"group {group!r} is not an IP address; give a multicast address such as "
            "'239.255.0.1' or 'ff02::1:3'"
        ) from exc
    if not addr.is_multicast:
        raise ValueError(
            f"group {group!r} is not a multicast address; IPv4 groups lie in 224.0.0.0/4 "
            "and IPv6 groups in ff00::/8 (for private use pick one in 239.255.0.0/16)"
        )
    if isinstance(addr, ipaddress.IPv4Address):
        return Group(addr, socket.AF_INET, _v4_scope(addr))
    scope_code = addr.packed[1] & 0x0F
    if scope_code in (0x0, 0xF):
        raise ValueError(
            f"group {group!r} has the reserved scope {scope_code:x} (RFC 4291), which no "
            "router or host may use; use ff02:: (link), ff05:: (site) or ff0e:: (global)"
        )
    if scope_code == 0x1:
        raise ValueError(
            f"group {group!r} is interface-local (ff01::/16) and never leaves the host; "
            "use a link-local (ff02::) or wider group"
        )
    return Group(addr, socket.AF_INET6, _V6_SCOPES.get(scope_code, f"scope-{scope_code:x}"))


def validate_payload(data: object, group: Group) -> bytes | bytearray | memoryview:
    """Any contiguous bytes-like object (``bytes``, ``bytearray``, ``memoryview``,
    ``array.array``, ...), as a bytes, bytearray or flat memoryview of bytes."""
    if isinstance(data, bytes | bytearray):
        size = len(data)
    else:
        try:
            view = memoryview(data)  # type: ignore[arg-type]
        except TypeError:
            raise TypeError(
                f"data must be a bytes-like object (bytes, bytearray, memoryview, array), "
                f"not {type(data).__name__}"
            ) from None
        if not view.c_contiguous:
            raise ValueError(
                "data is a non-contiguous buffer (a strided memoryview slice); a datagram "
                "is one run of bytes: pass bytes(view) or a contiguous view"
            )
        if view.ndim != 1 or view.format != "B":
            view = view.cast("B")
        data, size = view, view.nbytes
    if size > group.max_payload:
        raise ValueError(
            f"datagram of {size} bytes exceeds the UDP maximum of {group.max_payload} bytes "
            f"for {'IPv4' if group.family == socket.AF_INET else 'IPv6'}; split it"
        )
    return data


@dataclass(frozen=True, slots=True)
class Interface:
    """One network interface as seen at one moment."""

    name: str
    index: int
    up: bool = True
    running: bool = True
    multicast: bool = True
    loopback: bool = False
    ipv4: tuple[ipaddress.IPv4Interface, ...] = ()
    ipv6: tuple[ipaddress.IPv6Interface, ...] = ()
    is_default: bool = False
    #: What the kernel says the device is (rtnetlink), for the selections in
    #: :mod:`._selection`: its link kind (IFLA_INFO_KIND: ``"veth"``, ``"bridge"``,
    #: ``"vlan"``, ``"wireguard"``, ``"tun"``...), ``""`` for a device with no kind
    #: (a NIC's own driver), ``None`` where the kernel could not be asked.
    kind: str | None = None
    #: The index of the device this one sits on (IFLA_LINK: a VLAN's parent), or 0.
    parent: int = 0
    #: The index of the bridge or bond this device is a port of (IFLA_MASTER), or 0.
    master: int = 0
    #: Whether the device hangs off a bus device, as a NIC does (IFLA_PARENT_DEV_NAME,
    #: the kernel's /sys/class/net/NAME/device).
    bus: bool = False
    #: Whether the device is a wifi interface (listed in /proc/net/wireless).
    wireless: bool = False

    def addresses(self, family: socket.AddressFamily) -> tuple[str, ...]:
        items: Iterable[ipaddress.IPv4Interface | ipaddress.IPv6Interface]
        items = self.ipv4 if family == socket.AF_INET else self.ipv6
        return tuple(str(a.ip) for a in items)


class SnapshotSelector(Protocol):
    """A selection that looks at the whole snapshot (``mcastio.physical_links()``...)."""

    def pick(self, snapshot: Sequence[Interface]) -> Collection[int]:
        """The indexes of the interfaces it keeps."""
        ...


InterfaceSelector = Sequence[str] | Callable[[Interface], bool] | SnapshotSelector | None


def _is_snapshot_selector(selector: object) -> TypeGuard[SnapshotSelector]:
    return callable(getattr(selector, "pick", None))


def validate_selector(selector: object) -> InterfaceSelector:
    """``None``, a predicate, a selection, or interface names (kept as a tuple); never empty."""
    if selector is None or _is_snapshot_selector(selector):
        return selector
    if callable(selector):
        return selector
    if isinstance(selector, str):
        raise ValueError(f"interfaces must be a list of names, not the string {selector!r}")
    if isinstance(selector, bytes | bytearray | memoryview) or not isinstance(selector, Iterable):
        raise TypeError(
            f"interfaces must be a list of str names, a predicate or None, not {selector!r}"
        )
    given = tuple(selector)
    names = tuple(n for n in given if isinstance(n, str))
    if len(names) != len(given):
        bad = [n for n in given if not isinstance(n, str)]
        raise TypeError(f"interface names must be str, not {', '.join(map(repr, bad))}")
    if not names:
        # An empty list can never match, so the endpoint could never carry anything.
        raise ValueError("interfaces=[] selects no interface; pass None for every eligible one")
    return names


def is_eligible(iface: Interface, group: Group) -> bool:
    """Whether the default policy would join ``group`` on ``iface``."""
    if not (iface.up and iface.running and iface.multicast) or iface.loopback:
        return False
    if group.family == socket.AF_INET:
        return bool(iface.ipv4)
    if group.link_scoped:
        return bool(iface.ipv6)
    # A wider-scope group needs a source address that may leave the link.
    return any(not a.ip.is_link_local for a in iface.ipv6)


def ineligibility(iface: Interface, group: Group | None) -> tuple[str, ...]:
    """Why the default policy would not use ``iface`` (for ``group``, or for any
    group when ``None``); empty when it would."""
    why = []
    if iface.loopback:
        why.append("loopback")
    if not iface.up:
        why.append("down")
    elif not iface.running:
        why.append("no carrier")
    if not iface.multicast:
        why.append("no MULTICAST flag")
    if group is None:
        if not (iface.ipv4 or iface.ipv6):
            why.append("no address")
    elif group.family == socket.AF_INET:
        if not iface.ipv4:
            why.append("no IPv4 address")
    elif not iface.ipv6:
        why.append("no IPv6 address")
    elif not group.link_scoped and all(a.ip.is_link_local for a in iface.ipv6):
        why.append("only a link-local IPv6 address, too narrow for this group's scope")
    return tuple(why)


def select_interfaces(
    snapshot: Sequence[Interface],
    group: Group,
    selector: InterfaceSelector,
    *,
    missing_ok: bool = False,
) -> tuple[Interface, ...]:
    """The interfaces to join on: eligible ones, narrowed by the user's selector.

    Names that do not exist in the snapshot raise ``ValueError``, unless
    ``missing_ok`` (a running endpoint: a named USB card may be unplugged and come
    back); named interfaces that exist but are down are left out until they come up.
    """
    if selector is not None and _is_snapshot_selector(selector):
        keep = selector.pick(snapshot)
        return tuple(i for i in snapshot if i.index in keep and is_eligible(i, group))
    if selector is not None and not callable(selector):
        if isinstance(selector, str):
            raise ValueError(f"interfaces must be a list of names, not the string {selector!r}")
        wanted = list(selector)  # type: ignore[arg-type]
        known = {i.name for i in snapshot}
        unknown = [n for n in wanted if n not in known]
        if unknown and not missing_ok:
            raise ValueError(
                f"unknown interface name(s) {', '.join(map(repr, unknown))}; "
                f"this host has {', '.join(sorted(known)) or 'no interfaces'}"
            )
        names = set(wanted)
        return tuple(i for i in snapshot if i.name in names and is_eligible(i, group))
    chosen = tuple(i for i in snapshot if is_eligible(i, group))
    if selector is not None:
        chosen = tuple(i for i in chosen if selector(i))
    return chosen


def select_for_groups(
    snapshot: Sequence[Interface],
    groups: Sequence[Group],
    selector: InterfaceSelector,
    *,
    missing_ok: bool = False,
) -> tuple[Interface, ...]:
    """:func:`select_interfaces` for several groups: an interface is used for all of
    them or none, so it must be eligible for every one (the narrowest scope decides)."""
    chosen = select_interfaces(snapshot, groups[0], selector, missing_ok=missing_ok)
    return tuple(i for i in chosen if all(is_eligible(i, g) for g in groups[1:]))


def parse_groups(groups: str | Sequence[str]) -> tuple[Group, ...]:
    """One group (a string) or several of one address family, each once, in order."""
    if isinstance(groups, str):
        return (parse_group(groups),)
    if isinstance(groups, bytes | bytearray) or not isinstance(groups, Iterable):
        raise ValueError(
            f"group must be a string such as '239.255.0.1' or a list of them, not {groups!r}"
        )
    parsed = tuple(parse_group(g) for g in groups)
    if not parsed:
        raise ValueError("no group given: pass one group, or a list of at least one")
    families = {g.family for g in parsed}
    if len(families) > 1:
        raise ValueError(
            f"groups {', '.join(map(str, parsed))} mix IPv4 and IPv6; one endpoint "
            "carries one family (use DualStackEndpoint, or one endpoint per family)"
        )
    seen: set[Group] = set()
    for g in parsed:
        if g in seen:
            raise ValueError(f"group {g} is given twice")
        seen.add(g)
    return parsed


@dataclass(frozen=True, slots=True)
class Plan:
    """What to do to move from the current memberships to the desired ones."""

    add: tuple[Interface, ...] = ()
    remove: tuple[Interface, ...] = ()
    # (old, new) pairs: same index, but the transmit socket must be rebuilt.
    change: tuple[tuple[Interface, Interface], ...] = ()
    # Same index and transmit socket; only the recorded value moved (flags, name,
    # addresses the sockets do not depend on).
    refresh: tuple[Interface, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.add or self.remove or self.change or self.refresh)


def plan_changes(
    current: Mapping[int, Interface], desired: Sequence[Interface], family: socket.AddressFamily
) -> Plan:
    """Diff the joined interfaces (keyed by index) against the desired set.

    Keyed by index, not name: an interface deleted and re-created under the same
    name gets a new index, and the old membership died with the old device.
    """
    want = {i.index: i for i in desired}
    add = tuple(i for idx, i in want.items() if idx not in current)
    remove = tuple(i for idx, i in current.items() if idx not in want)
    change: list[tuple[Interface, Interface]] = []
    refresh: list[Interface] = []
    for idx, new in want.items():
        old = current.get(idx)
        if old is None or old == new:
            continue
        if tx_source(old, family) != tx_source(new, family):
            change.append((old, new))
        else:
            refresh.append(new)
    return Plan(add=add, remove=remove, change=tuple(change), refresh=tuple(refresh))


def tx_source(iface: Interface, family: socket.AddressFamily) -> object:
    """What of ``iface`` a transmit socket names besides its index."""
    # An IPv4 transmit socket is built with the interface's first address as its
    # source; an IPv6 one names only the index and the kernel picks each source.
    if family == socket.AF_INET:
        return iface.ipv4[0].ip if iface.ipv4 else None
    return None


@dataclass(frozen=True, slots=True)
class Datagram:
    """One received datagram."""

    data: bytes
    #: (host, port) for IPv4; (host, port, flowinfo, scope_id) for IPv6, as recvmsg
    #: gives it: a link-local sender's scope_id is the arrival interface's index and
    #: host has no %zone suffix, so the tuple can be passed to sendto() as it is.
    source: tuple[str, int] | tuple[str, int, int, int]
    #: The group it was sent to; ``None`` for a reply: a unicast datagram sent to
    #: one of the endpoint's transmit sockets, e.g. an answer to a query.
    group: str | None
    #: Name of the interface the datagram arrived on, e.g. ``"eth1"``.
    interface: str
    #: The TTL (IPv4) or hop limit (IPv6) it arrived with, when the endpoint was
    #: made with ``receive_ttl=True``; else ``None``.
    ttl: int | None = None

    @property
    def is_reply(self) -> bool:
        """Unicast sent to the endpoint's transmit socket, not traffic of the group."""
        return self.group is None


@dataclass(frozen=True, slots=True)
class SendResult:
    """The outcome of sending one copy on one interface."""

    interface: str
    error: OSError | None = None
    sent: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None


_SSM_V4 = ipaddress.IPv4Network("232.0.0.0/8")


def is_source_specific(group: Group) -> bool:
    """Whether ``group`` lies in an SSM range: 232.0.0.0/8 or ff3x::/32 (RFC 4607)."""
    if group.family == socket.AF_INET:
        return group.address in _SSM_V4
    packed = group.address.packed
    # ff3x::/32: flags P=1,T=1 (the 3) and a zero reserved byte and prefix length.
    return packed[1] >> 4 == 0x3 and packed[2:4] == b"\0\0"


def validate_sources(group: Group, sources: Iterable[str] | None) -> tuple[str, ...]:
    """Check the ``sources=`` of a source-specific join; ``()`` means any source.

    Returns the sources in canonical text form, without duplicates, in the given order.
    """
    if sources is None:
        return ()
    if isinstance(sources, str):
        raise ValueError(f"sources must be a list of addresses, not the string {sources!r}")
    family = "IPv4" if group.family == socket.AF_INET else "IPv6"
    result: list[str] = []
    for source in sources:
        if not isinstance(source, str) or "%" in source:
            raise ValueError(
                f"source {source!r} must be a unicast address string without a %zone "
                "(the (S,G) join is made per interface anyway)"
            )
        try:
            addr = ipaddress.ip_address(source.strip())
        except ValueError as exc:
            raise ValueError(f"source {source!r} is not an IP address") from exc
        if addr.version != group.address.version:
            raise ValueError(
                f"source {source!r} is IPv{addr.version} but group {group} is {family}; "
                "sources and group must be of one address family (use a second endpoint, "
                "or DualStackEndpoint, for the other family)"
            )
        if addr.is_multicast or addr.is_unspecified:
            raise ValueError(f"source {source!r} must be the unicast address of a sender")
        text = str(addr)
        if text not in result:
            result.append(text)
    if not result:
        raise ValueError("sources= is empty; give at least one sender, or omit it for any source")
    if not is_source_specific(group):
        ssm = "232.0.0.0/8" if group.family == socket.AF_INET else "ff3x::/32 (e.g. ff3e::1234)"
        raise ValueError(
            f"group {group} is not a source-specific multicast group, so sources= cannot "
            f"apply; pick an SSM group in {ssm}, or drop sources= to receive from anyone"
        )
    return tuple(result)
