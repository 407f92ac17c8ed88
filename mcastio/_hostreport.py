"""The host's own membership report, and what /proc says about its memberships.

Shared by the membership keeper (:mod:`._keepalive`) and the re-announce on
carrier return (:mod:`._membership`): both make the host report a membership
again with the report the kernel itself sends when asked, in the version it
speaks on that interface, and never with a Leave.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import time

from . import _rawnet
from ._discovery import proc_net_path
from ._igmp import igmp_report, mld_report
from ._model import Group, Interface
from ._procnet import parse_igmp, parse_igmp6, parse_igmp_versions

__all__ = ["SHARED", "holders", "host_version", "send_report"]


def send_report(
    sock: socket.socket, iface: Interface, group: Group, sources: tuple[str, ...]
) -> None:
    """The host's current-state report for ``group`` on ``iface``, sent on raw ``sock``,
    in the version the host speaks there; what the kernel answers to a query."""
    v6 = group.family == socket.AF_INET6
    payload, dest = _report(group.address, sources, host_version(v6, iface.name))
    source: ipaddress.IPv4Address | ipaddress.IPv6Address
    if v6:
        # MLD must come from the link-local address (RFC 3810 §5).
        source = next((a.ip for a in iface.ipv6 if a.ip.is_link_local), ipaddress.IPv6Address(0))
    else:
        source = iface.ipv4[0].ip
    _rawnet.send_raw(sock, iface, source, payload, dest)


@functools.lru_cache(maxsize=1024)
def _report(
    group: ipaddress.IPv4Address | ipaddress.IPv6Address, sources: tuple[str, ...], version: int
) -> tuple[bytes, str]:
    # Built once per group and version: 1,600 refreshes a minute must not parse
    # addresses 1,600 times.
    if isinstance(group, ipaddress.IPv6Address):
        payload, dest6 = mld_report(version, group, [ipaddress.IPv6Address(s) for s in sources])
        return payload, str(dest6)
    payload, dest4 = igmp_report(version, group, [ipaddress.IPv4Address(s) for s in sources])
    return payload, str(dest4)


SHARED = (
    "another socket on this host holds {} on {}: the source-filter change may then "
    "send no report (the host's combined filter need not change); give the process "
    "CAP_NET_RAW or run 'mcastio querier' on the segment"
)


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


# /proc/net/igmp lists every membership on the host: read it at most once per
# _FRESH seconds for every keeper in the process, and parse only what is asked.
_FRESH = 2.0
_proc_cache: dict[str, tuple[float, str]] = {}
_versions: tuple[str, dict[str, int]] = ("", {})


def _proc(name: str) -> str:
    now = time.monotonic()
    cached = _proc_cache.get(name)
    if cached is None or now - cached[0] > _FRESH:
        cached = _proc_cache[name] = (now, _read(proc_net_path(name)))
    return cached[1]


def _igmp_versions() -> dict[str, int]:
    global _versions
    text = _proc("igmp")
    if _versions[0] is not text:
        _versions = (text, parse_igmp_versions(text))
    return _versions[1]


def host_version(v6: bool, ifname: str) -> int:
    """What the host speaks on ``ifname``: IGMP 1-3 (the kernel's own column) or MLD 1-2."""
    if v6:
        # The kernel does not show its MLD compatibility mode; the forced one is a sysctl.
        forced = {
            _read(f"/proc/sys/net/ipv6/conf/{name}/force_mld_version").strip()
            for name in ("all", ifname)
        }
        return 1 if "1" in forced else 2
    return _igmp_versions().get(ifname, 3)


def holders(v6: bool, ifname: str, group: Group) -> int:
    """How many sockets hold ``group`` on ``ifname`` (the kernel's Users column)."""
    address = group.address
    if v6:
        members = parse_igmp6(_proc("igmp6"))
    else:
        members = tuple(m for d in parse_igmp(_proc("igmp")) for m in d.groups)
    return sum(m.users for m in members if m.interface == ifname and m.group == address)
