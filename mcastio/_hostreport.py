"""The host's own membership report, and what /proc says about its memberships.

Shared by the membership keeper (:mod:`._keepalive`) and the re-announce on
carrier return (:mod:`._membership`): both make the host report a membership
again with the report the kernel itself sends when asked, in the version it
speaks on that interface, and never with a Leave.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import os
import socket
import time
import weakref

from ._errors import MulticastError
from ._igmp import igmp_report, mld_report
from ._model import Group, Interface
from ._platform.linux import rawnet as _rawnet
from ._platform.linux.procfs import netns, proc_net_path, read_text, sysctl
from ._platform.linux.procnet import parse_igmp, parse_igmp6, parse_igmp_versions

__all__ = [
    "SHARED",
    "holders",
    "host_version",
    "report_source",
    "send_report",
    "stop_reading",
]


def send_report(
    sock: socket.socket,
    iface: Interface,
    group: Group,
    sources: tuple[str, ...],
    *,
    fresh: bool = False,
) -> None:
    """The host's current-state report for ``group`` on ``iface``, sent on raw ``sock``,
    in the version the host speaks there; what the kernel answers to a query.
    ``fresh``: read that version now, not from the table the keepers share."""
    v6 = group.family == socket.AF_INET6
    version = host_version(v6, iface.name, fresh=fresh)
    payload, dest = _report(group.address, sources, version)
    _rawnet.send_raw(sock, iface, report_source(iface, v6), payload, dest)


def report_source(iface: Interface, v6: bool) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """Where the host's reports on ``iface`` come from; MulticastError if nowhere."""
    if v6:
        # MLD must come from the link-local address (RFC 3810 §5).
        return next((a.ip for a in iface.ipv6 if a.ip.is_link_local), ipaddress.IPv6Address(0))
    if not iface.ipv4:
        raise MulticastError(f"{iface.name} has no IPv4 address to report from")
    return iface.ipv4[0].ip


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
    return read_text(path) or ""


# /proc/net/igmp lists every membership on the host: read it at most once per
# _FRESH seconds for every keeper in the process, and parse only what is asked.
_FRESH = 2.0
_proc_cache: dict[str, tuple[float, str]] = {}


def _proc(name: str) -> str:
    now = time.monotonic()
    cached = _proc_cache.get(name)
    if cached is None or now - cached[0] > _FRESH:
        cached = _proc_cache[name] = (now, _read(proc_net_path(name)))
    return cached[1]


class _SlicedVersions:
    """The IGMP version per interface, re-read in the background a slice per loop pass.

    /proc/net/igmp holds a line per membership on the host (1,617 at 100 groups on
    16 links): the kernel takes ~1 ms to write it and Python ~0.5 ms to skim it, in
    one piece a stall of the loop. So a stale table is served while a fresh copy is
    read ``_CHUNK`` bytes per pass (the kernel writes a seq_file a page at a time,
    on demand) and parsed line by line as it comes. Only the first read, with
    nothing to serve, is done at once.
    """

    def __init__(self) -> None:
        self.table: dict[str, int] | None = None
        self.read_at = 0.0
        self._fd: int | None = None
        self._netns = 0
        self._partial: dict[str, int] = {}
        self._tail = ""
        # The loop a read under way steps on: one that ended mid-read never steps again.
        self._reader: weakref.ref[asyncio.AbstractEventLoop] | None = None

    def get(self) -> dict[str, int]:
        now = time.monotonic()
        if self._fd is not None:
            loop = self._reader() if self._reader is not None else None
            if loop is None or loop.is_closed():
                self.stop()  # abandoned with its loop: start again below
        if self.table is not None and now - self.read_at > _FRESH and self._fd is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.table = None
            else:
                # Stale is served while the fresh copy is read, but never another
                # network namespace's table (a process may move between them).
                if netns() == self._netns:
                    self._begin(loop)
                else:
                    self.table = None
        if self.table is None:
            self.table = parse_igmp_versions(_read(proc_net_path("igmp")))
            self.read_at, self._netns = now, netns()
        return self.table

    def _begin(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            self._fd = os.open(proc_net_path("igmp"), os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            self.table, self.read_at = {}, time.monotonic()
            return
        self._partial, self._tail = {}, ""
        self._reader = weakref.ref(loop)
        loop.call_soon(self._step, loop, self._fd)

    def _step(self, loop: asyncio.AbstractEventLoop, fd: int) -> None:
        if self._fd != fd:
            return  # abandoned (see stop), perhaps restarted with another descriptor
        try:
            chunk = os.read(fd, _CHUNK).decode("ascii", "replace")
        except OSError:
            chunk = ""
        if chunk:
            lines, _, self._tail = (self._tail + chunk).rpartition("\n")
            self._partial.update(parse_igmp_versions(lines))
            loop.call_soon(self._step, loop, fd)
            return
        self._partial.update(parse_igmp_versions(self._tail))
        self.stop()
        self.table, self.read_at, self._netns = self._partial, time.monotonic(), netns()

    def stop(self) -> None:
        """Close a read under way (a keeper closes: its loop may end before the read)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


_CHUNK = 4096


_sliced = _SlicedVersions()


def stop_reading() -> None:
    """Close the background read of /proc/net/igmp, if one is under way."""
    _sliced.stop()


def _igmp_versions() -> dict[str, int]:
    return _sliced.get()


def host_version(v6: bool, ifname: str, *, fresh: bool = False) -> int:
    """What the host speaks on ``ifname``: IGMP 1-3 (the kernel's own column) or MLD 1-2.

    The IGMP column comes from a table up to ``_FRESH`` seconds old, shared by every
    keeper; ``fresh`` reads it now. A rare event wants that: a table of a namespace
    just destroyed can pass for this one's (namespace inode numbers are reused),
    and a v3 report on a v2 link is ignored by a v2 querier or switch.
    """
    if v6:
        # The kernel does not show its MLD compatibility mode; the forced one is a sysctl.
        forced = {sysctl(f"net/ipv6/conf/{name}/force_mld_version") for name in ("all", ifname)}
        return 1 if "1" in forced else 2
    if fresh:
        return _fresh_versions().get(ifname, 3)
    return _igmp_versions().get(ifname, 3)


# One fresh read serves every group and link of one burst of re-announcements (a
# switch that reboots returns carrier on 16 links under 100 groups at once): far
# younger than a namespace could be destroyed and its inode number reused.
_FRESH_BURST = 0.1
_fresh: tuple[float, int, dict[str, int]] = (-_FRESH_BURST - 1, 0, {})  # never read yet


def _fresh_versions() -> dict[str, int]:
    global _fresh
    now, ns = time.monotonic(), netns()
    read_at, read_in, table = _fresh
    if now - read_at > _FRESH_BURST or read_in != ns:
        table = parse_igmp_versions(_read(proc_net_path("igmp")))
        _fresh = (now, ns, table)
    return table


# The Users column per (interface, group), parsed once per text read, per family.
_users: dict[str, tuple[str, dict[tuple[str, object], int]]] = {}


def holders(v6: bool, ifname: str, group: Group) -> int:
    """How many sockets hold ``group`` on ``ifname`` (the kernel's Users column)."""
    name = "igmp6" if v6 else "igmp"
    text = _proc(name)
    cached = _users.get(name)
    if cached is None or cached[0] is not text:
        # Parsed once per read for every keeper: an unprivileged refresh asks this
        # of each of the 1,600 memberships of 100 groups on 16 links.
        members = parse_igmp6(text) if v6 else tuple(m for d in parse_igmp(text) for m in d.groups)
        table: dict[tuple[str, object], int] = {}
        for m in members:
            key = (m.interface, m.group)
            table[key] = table.get(key, 0) + m.users
        cached = _users[name] = (text, table)
    return cached[1].get((ifname, group.address), 0)
