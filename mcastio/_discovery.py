"""Read the host's interfaces into a pure snapshot (``tuple[Interface, ...]``).

This is the only module that asks psutil and netifaces; everything downstream
works on the returned values. It chooses the source: Linux's rtnetlink dumps
where the kernel answers them (:mod:`._platform.linux.snapshot`, which also
reads what only Linux tells, from /proc and /sys), else psutil and netifaces,
the path every OS takes.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Collection, Mapping
from typing import Any

import netifaces
import psutil

from ._model import Interface
from ._platform.linux.hostdump import read_host
from ._platform.linux.linkfacts import names_parent_devices
from ._platform.linux.procfs import sysfs_says
from ._platform.linux.snapshot import (
    fact_fields,
    read_facts,
    read_unusable_v6,
    read_wireless,
    snapshot_from_dump,
)

__all__ = [
    "default_route_interfaces",
    "fold_labels",
    "read_snapshot",
    "read_snapshot_psutil",
]

_log = logging.getLogger("mcastio")


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
        read_wireless(),
        sysfs_says,
        bus_known=names_parent_devices(),
    )


def read_snapshot_psutil() -> tuple[Interface, ...]:
    """:func:`read_snapshot` by psutil, netifaces and sysfs (where rtnetlink cannot dump)."""
    addrs = psutil.net_if_addrs()
    stats = psutil.net_if_stats()
    defaults = default_route_interfaces()
    unusable = read_unusable_v6()
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
    facts = read_facts()
    wireless = read_wireless()
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
                **fact_fields(name, index, facts.get(index), wireless),
            )
        )
    result.sort(key=lambda i: i.index)
    return tuple(result)
