"""The interface snapshot from Linux's own sources: rtnetlink dumps, /proc and /sys.

:func:`snapshot_from_dump` builds from the two rtnetlink dumps the snapshot
psutil and netifaces would give (:mod:`mcastio._discovery`, which chooses); the
readers beside it add what only Linux tells: the link kinds, parents and buses,
which devices are wireless, which IPv6 addresses are still tentative. On another
OS the readers find nothing and the snapshot is psutil's alone.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import socket
import sys
from collections.abc import Callable, Collection, Sequence
from typing import Any

from ..._model import Interface
from .. import platform_name
from .hostdump import Address
from .linkfacts import Link, LinkFacts, read_link_facts
from .procfs import read_proc_net, sysfs_says
from .procnet import parse_if_inet6, parse_wireless, usable_v6

__all__ = [
    "fact_fields",
    "read_facts",
    "read_unusable_v6",
    "read_wireless",
    "snapshot_from_dump",
]

_log = logging.getLogger("mcastio")


def read_wireless() -> set[str]:
    """Names /proc/net/wireless lists (the wireless extensions); empty off Linux."""
    # None: no wireless extensions in this kernel; the sysfs check still applies.
    return parse_wireless(read_proc_net("wireless") or "")


def read_facts() -> dict[int, LinkFacts]:
    """Each link's kind, parent, master and bus by index (rtnetlink); empty off Linux."""
    if platform_name(sys.platform) != "linux":
        # rtnetlink is Linux's: the selections fall back to names, as in a sandbox.
        return {}
    try:
        return read_link_facts()
    except OSError as exc:
        # A sandbox without netlink: the selections fall back to names (docs).
        _log.debug("cannot read the link kinds: %s", exc)
        return {}


def read_unusable_v6() -> dict[str, set[ipaddress.IPv6Address]]:
    """Each device's IPv6 addresses not usable yet (tentative: /proc/net/if_inet6)."""
    # None: no IPv6 in this kernel or namespace, so nothing can be tentative.
    return parse_if_inet6(read_proc_net("if_inet6") or "")


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


def fact_fields(
    name: str,
    index: int,
    fact: LinkFacts | None,
    wireless: Collection[str],
    sysfs_says: Callable[[str, int, tuple[str, ...]], bool] = sysfs_says,
    bus_known: bool = False,
) -> dict[str, Any]:
    """The Interface fields only Linux tells (kind, parent, master, bus, wireless)."""
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
    """The snapshot :func:`mcastio._discovery.read_snapshot_psutil` would give, from the
    rtnetlink dumps.

    ``bus_known``: the dump's bus facts are the whole truth (see
    :func:`.linkfacts.names_parent_devices`), so sysfs is asked only about wifi.

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
                **fact_fields(name, index, link.facts, wireless, sysfs_says, bus_known),
            )
        )
    result.sort(key=lambda i: i.index)
    return tuple(result)
