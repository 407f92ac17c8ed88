"""Read the host's interfaces into a pure snapshot (``tuple[Interface, ...]``).

This is the only module that asks psutil and netifaces; everything downstream
works on the returned values.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import socket
import sys
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import netifaces
import psutil

from ._model import Interface
from ._platform import platform_name
from ._platform.linux.hostdump import Address, read_host
from ._platform.linux.linkfacts import Link, LinkFacts, names_parent_devices, read_link_facts
from ._platform.linux.procfs import read_proc_net, sysfs_says
from ._platform.linux.procnet import parse_if_inet6, parse_wireless, usable_v6

__all__ = [
    "default_route_interfaces",
    "fold_labels",
    "read_snapshot",
    "read_snapshot_psutil",
    "snapshot_from_dump",
]

_log = logging.getLogger("mcastio")


def _read_wireless() -> set[str]:
    # None: no wireless extensions in this kernel; the sysfs check still applies.
    return parse_wireless(read_proc_net("wireless") or "")


def _read_facts() -> dict[int, LinkFacts]:
    if platform_name(sys.platform) != "linux":
        # rtnetlink is Linux's: the selections fall back to names, as in a sandbox.
        return {}
    try:
        return read_link_facts()
    except OSError as exc:
        # A sandbox without netlink: the selections fall back to names (docs).
        _log.debug("cannot read the link kinds: %s", exc)
        return {}


def _read_unusable_v6() -> dict[str, set[ipaddress.IPv6Address]]:
    # None: no IPv6 in this kernel or namespace, so nothing can be tentative.
    return parse_if_inet6(read_proc_net("if_inet6") or "")


def default_route_interfaces() -> set[str]:
    """Names of the interfaces that carry an IPv4 or IPv6 default route."""
    try:
        gateways: Mapping[Any, Any] = netifaces.gateways()
    except OSError as exc:
        _log.debug("cannot read the routing table: %s", exc)
        return set()
    defaults = gateways.get("default", {})
    names: set[str] = set()
    if isinstance(defaults, Mapping):
        for entry in defaults.values():
            if isinstance(entry, tuple) and len(entry) >= 2:
                names.add(str(entry[1]))
    return names


def _prefixlen(netmask: str | None, bits: int) -> int:
    """psutil gives dotted or colon-hex masks; count their leading one bits."""
    if not netmask:
        return bits
    try:
        packed = ipaddress.ip_address(netmask).packed
    except ValueError:
        return bits
    value = int.from_bytes(packed, "big")
    return bin(value).count("1") if len(packed) * 8 == bits else bits


def _v6(addr: str, netmask: str | None) -> ipaddress.IPv6Interface:
    host = addr.split("%", 1)[0]
    return ipaddress.IPv6Interface(f"{host}/{_prefixlen(netmask, 128)}")


def fold_labels(indexes: Mapping[str, int], devices: Collection[str]) -> dict[str, list[str]]:
    """Device name -> the names psutil reports for it: the device's own first.

    An IPv4 address with a label (``ip addr add ... label eth0:1``) is reported
    under the label, as if it were another interface; the label shares its
    device's index, and only devices are in ``devices``.
    """
    by_index = {index: name for name, index in indexes.items() if name in devices}
    folded: dict[str, list[str]] = {}
    for name in sorted(indexes, key=lambda n: (n not in devices, n)):
        folded.setdefault(by_index.get(indexes[name], name), []).append(name)
    return folded


# Link kinds whose drivers never make a wifi device (no ieee80211_ptr, no wireless
# handlers): sysfs is not asked about them. A NIC's own driver has no kind, and a
# kind that is not listed here (virt_wifi...) is asked about.
_NEVER_WIFI = frozenset(
    {
        "veth", "bridge", "bond", "team", "vlan", "macvlan", "macvtap", "ipvlan", "ipvtap",
        "vxlan", "geneve", "bareudp", "gre", "gretap", "ip6gre", "ip6gretap", "erspan",
        "ip6erspan", "ipip", "sit", "ip6tnl", "vti", "vti6", "xfrm", "wireguard", "dummy",
        "ifb", "nlmon", "vrf", "macsec", "netkit", "hsr", "gtp", "tun",
    }
)  # fmt: skip


def _fact_fields(
    name: str,
    index: int,
    fact: LinkFacts | None,
    wireless: Collection[str],
    sysfs_says: Callable[[str, int, tuple[str, ...]], bool] = sysfs_says,
    bus_known: bool = False,
) -> dict[str, Any]:
    if fact is None:
        return {"wireless": name in wireless}
    return {
        "kind": fact.kind,
        "parent": fact.parent,
        "master": fact.master,
        "bus": fact.bus or (not bus_known and sysfs_says(name, index, ("device",))),
        "wireless": name in wireless
        or (fact.kind not in _NEVER_WIFI and sysfs_says(name, index, ("wireless", "phy80211"))),
    }


def read_snapshot() -> tuple[Interface, ...]:
    """One consistent-enough reading of every interface on the host, sorted by index.

    Two rtnetlink dumps where the kernel answers them; else psutil and netifaces
    (:func:`read_snapshot_psutil`), which give the same snapshot, slower.
    """
    try:
        links, addresses = read_host()
    except OSError as exc:
        _log.debug("cannot dump the interfaces by rtnetlink, asking psutil: %s", exc)
        return read_snapshot_psutil()
    return snapshot_from_dump(
        links,
        addresses,
        default_route_interfaces(),
        _read_wireless(),
        sysfs_says,
        bus_known=names_parent_devices(),
    )


# IFF_* (include/uapi/linux/if.h): the same bits psutil's flags name.
_IFF_UP = 0x1
_IFF_LOOPBACK = 0x8
_IFF_RUNNING = 0x40
_IFF_MULTICAST = 0x1000


# Parsed once: a host's addresses change rarely, and the watcher reads them again
# on every reconcile.
@functools.lru_cache(maxsize=8192)
def _v4_of(packed: bytes, prefixlen: int) -> ipaddress.IPv4Interface:
    return ipaddress.IPv4Interface((packed, prefixlen))


@functools.lru_cache(maxsize=8192)
def _v6_of(packed: bytes, prefixlen: int) -> ipaddress.IPv6Interface:
    return ipaddress.IPv6Interface((packed, prefixlen))


def snapshot_from_dump(
    links: Sequence[Link],
    addresses: Sequence[Address],
    defaults: Collection[str],
    wireless: Collection[str],
    sysfs_says: Callable[[str, int, tuple[str, ...]], bool],
    *,
    bus_known: bool = False,
) -> tuple[Interface, ...]:
    """The snapshot :func:`read_snapshot_psutil` would give, from the rtnetlink dumps.

    ``bus_known``: the dump's bus facts are the whole truth (see
    :func:`._platform.linux.linkfacts.names_parent_devices`), so sysfs is asked only about wifi.

    IPv4 addresses are listed by label as getifaddrs does: the device's own
    first, then its labels (``eth0:1``) in name order; each list in dump order.
    """
    names = {link.facts.index: link.name for link in links}
    v4: dict[int, dict[str, list[ipaddress.IPv4Interface]]] = {}
    v6: dict[int, list[ipaddress.IPv6Interface]] = {}
    for a in addresses:
        name = names.get(a.index)
        if name is None:
            continue  # Its device went between the dumps; the next read settles it.
        if a.family == socket.AF_INET:
            label = a.label or name
            v4.setdefault(a.index, {}).setdefault(label, []).append(_v4_of(a.packed, a.prefixlen))
        elif usable_v6(a.flags):
            v6.setdefault(a.index, []).append(_v6_of(a.packed, a.prefixlen))
    result: list[Interface] = []
    for link in links:
        index, name, flags = link.facts.index, link.name, link.flags
        labels = v4.get(index, {})
        order = sorted(labels, key=lambda label: (label != name, label))
        result.append(
            Interface(
                name=name,
                index=index,
                up=bool(flags & _IFF_UP),
                running=bool(flags & _IFF_RUNNING),
                multicast=bool(flags & _IFF_MULTICAST),
                loopback=bool(flags & _IFF_LOOPBACK),
                ipv4=tuple(a for label in order for a in labels[label]),
                ipv6=tuple(v6.get(index, ())),
                is_default=name in defaults,
                **_fact_fields(name, index, link.facts, wireless, sysfs_says, bus_known),
            )
        )
    result.sort(key=lambda i: i.index)
    return tuple(result)


def read_snapshot_psutil() -> tuple[Interface, ...]:
    """:func:`read_snapshot` by psutil, netifaces and sysfs (where rtnetlink cannot dump)."""
    addrs = psutil.net_if_addrs()
    stats = psutil.net_if_stats()
    defaults = default_route_interfaces()
    unusable = _read_unusable_v6()
    # Every device's index in one dump: out of descriptors, it fails as a whole
    # (and the watcher retries) instead of making single interfaces look vanished.
    devices = {name: index for index, name in socket.if_nameindex()}
    indexes: dict[str, int] = {}
    for name in set(addrs) | set(stats):
        # A label "eth0:1" belongs to device "eth0": no device name may contain ':'.
        index = devices.get(name, devices.get(name.split(":", 1)[0]))
        if index is not None:
            indexes[name] = index
        # Else it vanished between the reads; the next snapshot settles it.
    facts = _read_facts()
    wireless = _read_wireless()
    result: list[Interface] = []
    for name, reported in fold_labels(indexes, devices).items():
        index = indexes[reported[0]]
        st = stats.get(name)
        flags = set(st.flags.split(",")) if st is not None and st.flags else set()
        ipv4: list[ipaddress.IPv4Interface] = []
        ipv6: list[ipaddress.IPv6Interface] = []
        for a in (a for label in reported for a in addrs.get(label, ())):
            if a.family == socket.AF_INET:
                ipv4.append(ipaddress.IPv4Interface(f"{a.address}/{_prefixlen(a.netmask, 32)}"))
            elif a.family == socket.AF_INET6:
                v6 = _v6(a.address, a.netmask)
                if v6.ip not in unusable.get(name, ()):
                    ipv6.append(v6)
        result.append(
            Interface(
                name=name,
                index=index,
                up="up" in flags or bool(st and st.isup),
                running="running" in flags,
                multicast="multicast" in flags,
                loopback="loopback" in flags,
                ipv4=tuple(ipv4),
                ipv6=tuple(ipv6),
                is_default=name in defaults,
                **_fact_fields(name, index, facts.get(index), wireless),
            )
        )
    result.sort(key=lambda i: i.index)
    return tuple(result)
