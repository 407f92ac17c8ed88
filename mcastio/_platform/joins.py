"""Joins and leaves by interface index, in each OS's own RFC 3678 layout.

``MCAST_JOIN_GROUP`` with a ``struct group_req`` names the interface by index on
every OS mcastio knows (RFC 3678 section 5.1; Linux, macOS, FreeBSD and Windows
all define it), for IPv4 and IPv6 alike: the portable path joins this way, so it
needs no interface address, and an interface with IPv6 only can be joined too.
Only the option numbers, the family numbers, the ``sin_len`` byte and where the
group starts differ; each OS's module (:mod:`.linux`, :mod:`.darwin`,
:mod:`.freebsd`, :mod:`.windows`) has them with their sources.

Pure: a request is (level, option, bytes) for ``setsockopt``.
"""

from __future__ import annotations

import ipaddress
from types import ModuleType
from typing import NamedTuple

__all__ = ["Request", "join_request", "leave_request", "os_module"]

# The protocol numbers (IANA, the same in every OS's headers): the level an
# IPv4 group's option is set at, and an IPv6 group's.
IPPROTO_IP = 0
IPPROTO_IPV6 = 41


class Request(NamedTuple):
    """One ``setsockopt(level, option, value)``."""

    level: int
    option: int
    value: bytes


def os_module(platform: str) -> ModuleType:
    """The per-OS data module for a platform name (:func:`.platform_name`)."""
    # Imported here: each is data for the platform it names.
    if platform == "linux":
        from . import linux

        return linux
    if platform == "darwin":
        from . import darwin

        return darwin
    if platform == "freebsd":
        from . import freebsd

        return freebsd
    if platform == "windows":
        from . import windows

        return windows
    raise ValueError(f"no join layout for platform {platform!r}")


def _request(
    platform: str,
    group: ipaddress.IPv4Address | ipaddress.IPv6Address,
    ifindex: int,
    source: ipaddress.IPv4Address | ipaddress.IPv6Address | None,
    *,
    join: bool,
) -> Request:
    if ifindex <= 0:
        # Index 0 lets the kernel pick one interface: the trap mcastio exists to avoid.
        raise ValueError(f"a join needs an interface index, not {ifindex}")
    if source is not None and source.version != group.version:
        raise ValueError(f"source {source} and group {group} are of different families")
    os = os_module(platform)
    level = IPPROTO_IP if group.version == 4 else IPPROTO_IPV6
    packed_group = os.group_sockaddr(group)
    if source is None:
        option = os.MCAST_JOIN_GROUP if join else os.MCAST_LEAVE_GROUP
        return Request(level, option, os.GROUP.pack_group(ifindex, packed_group))
    option = os.MCAST_JOIN_SOURCE_GROUP if join else os.MCAST_LEAVE_SOURCE_GROUP
    packed_source = os.group_sockaddr(source)
    return Request(level, option, os.GROUP.pack_source(ifindex, packed_group, packed_source))


def join_request(
    platform: str,
    group: ipaddress.IPv4Address | ipaddress.IPv6Address,
    ifindex: int,
    source: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None,
) -> Request:
    """The ``setsockopt`` that joins ``group`` on interface ``ifindex`` (from ``source``)."""
    return _request(platform, group, ifindex, source, join=True)


def leave_request(
    platform: str,
    group: ipaddress.IPv4Address | ipaddress.IPv6Address,
    ifindex: int,
    source: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None,
) -> Request:
    """The ``setsockopt`` that leaves what :func:`join_request` joined."""
    return _request(platform, group, ifindex, source, join=False)
