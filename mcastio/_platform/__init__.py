"""What mcastio does on the platform it runs on: one value, chosen at run time.

mcastio is built on Linux, and its traps are Linux's. Elsewhere (macOS, the BSDs,
Windows) it runs a portable profile that needs only what every OS has: a polled
host monitor, the arrival interface told by which socket read a datagram, no raw
IGMP/MLD. :func:`capabilities` says which profile runs and what it offers;
``MCASTIO_PORTABLE=1`` runs the portable profile on Linux too, so its logic can
be tested on a real kernel. The option numbers and struct layouts of the other
OSes live in this package's per-OS modules (:mod:`.darwin`, :mod:`.freebsd`,
:mod:`.windows`), each value with the header it came from.

Nothing here opens a socket. :func:`choose` is pure; :func:`capabilities` reads
``sys.platform``, the environment and, on Linux, which drains are importable and
one sysctl.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from .._errors import MulticastError

__all__ = [
    "LINUX_ONLY_MODULES",
    "PORTABLE_ENV",
    "Capabilities",
    "capabilities",
    "choose",
    "describe",
    "platform_name",
    "unavailable",
]

#: ``MCASTIO_PORTABLE=1`` in the environment: the portable profile, even on Linux.
PORTABLE_ENV = "MCASTIO_PORTABLE"

#: Modules that work on Linux only and that ``import mcastio`` does not import:
#: each is imported where its feature is used, after :func:`capabilities` said
#: yes. tests/test_platforms_import.py makes them unimportable and imports
#: mcastio as macOS, FreeBSD and Windows. The package's other modules (the
#: receive socket ``linux.receiver``, the snapshot ``linux.snapshot``, ``hostdump``,
#: ``linkfacts``, ``procfs``, ``procnet``, ``ancillary``) import on every OS, as
#: ``import mcastio`` needs; what they do is Linux's (elsewhere the snapshot's
#: readers find nothing, and the Linux profile's sockets are never opened).
LINUX_ONLY_MODULES = frozenset(
    {
        "mcastio._platform.linux.netlink",  # rtnetlink: AF_NETLINK
        "mcastio._platform.linux._cdrain",  # the compiled drain: recvmmsg(2)
        "mcastio._platform.linux.mmsg",  # recvmmsg(2) through ctypes, Linux's layouts
        "mcastio._platform.linux.rawnet",  # raw IGMP/MLD sockets, AF_PACKET, BPF
        # mcastio's own features built on them, Linux-only for that reason:
        "mcastio._keepalive",  # the keeper: raw IGMP/MLD reports, /proc/net/igmp
        "mcastio._querywatch",  # the keeper's query capture: raw sockets
        "mcastio._hostreport",  # the host's own report: raw sockets, /proc/net/igmp
    }
)

#: The kernel's default for net.ipv4.igmp_max_memberships (Linux
#: Documentation/networking/ip-sysctl.rst: "igmp_max_memberships ... Default 20").
LINUX_DEFAULT_MEMBERSHIPS = 20

Profile = Literal["linux", "portable"]
WatchMode = Literal["netlink", "poll"]


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What mcastio does on this platform (``mcastio.capabilities()``).

    ``profile`` is ``"linux"`` (everything mcastio has, on Linux) or
    ``"portable"`` (macOS, the BSDs, Windows, or Linux with ``MCASTIO_PORTABLE=1``).
    A feature marked False raises :class:`MulticastError` naming the platform when
    asked for, or is left out with a reason where it is on by default (the keeper).
    """

    #: ``"linux"``, ``"darwin"`` (macOS), ``"freebsd"``, ``"windows"``, or
    #: ``sys.platform`` as it is for any other.
    platform: str
    profile: Profile
    #: Why this profile, in words (``"MCASTIO_PORTABLE=1"``, ``"not Linux"``, ...).
    why: str
    #: The kernel names each datagram's arrival interface (IP_PKTINFO,
    #: IPV6_PKTINFO). False: one receive socket per interface tells it instead.
    datagram_interface: bool
    #: Each datagram's TTL or hop limit can be read (``Datagram.ttl``); else None.
    datagram_ttl: bool
    #: Each datagram's group is given (``Datagram.group``): by the kernel per
    #: datagram (Linux profile), or by the receive socket, which holds one group on
    #: Unix. False on Windows, whose socket per interface holds every group, so a
    #: datagram's group there is known only while the endpoint has one.
    datagram_group: bool
    #: One transmit socket sends out of every interface of an endpoint, each
    #: datagram naming its interface (``IP_PKTINFO``/``IPV6_PKTINFO`` on sendmsg),
    #: and reads every reply. False: a transmit socket per interface, picked with
    #: ``IP_MULTICAST_IF``, each reading the replies to what it sent.
    pinned_send: bool
    #: Batched sends: sendmmsg, UDP GSO and the compiled send_all. False: one
    #: ``sendto`` per datagram, with the same results.
    batched_send: bool
    #: The membership keeper (``keepalive=``): raw IGMP/MLD and /proc/net/igmp.
    keeper: bool
    #: :class:`mcastio.Querier`: raw IGMP/MLD queries.
    querier: bool
    #: How interface changes are followed: rtnetlink, or polling with a debounce.
    watch: WatchMode
    #: Several datagrams per system call (recvmmsg).
    batched_receive: bool
    #: The compiled drain (C, recvmmsg) reads and builds datagrams.
    compiled_drain: bool
    #: Receive sockets must set IP_MULTICAST_ALL to 0 to see only their own
    #: groups (Linux delivers every group any socket joined, by default).
    multicast_all_needed: bool
    #: IPv4 group memberships one socket may hold; None where not known.
    memberships_per_socket: int | None
    #: The kernel's state can be read from /proc and /sys (``mcastio doctor``,
    #: ``mcastio interfaces``' memberships).
    procfs: bool


def platform_name(raw: str) -> str:
    """``sys.platform`` as a platform name: ``"freebsd14"`` is ``"freebsd"``."""
    if raw.startswith("linux"):
        return "linux"
    if raw.startswith("freebsd"):
        return "freebsd"
    if raw == "win32":
        return "windows"
    return raw


def _other_memberships(name: str) -> int | None:
    # Imported here: the per-OS modules are data for the platform they name.
    if name == "darwin":
        from . import darwin

        return darwin.IP_MAX_MEMBERSHIPS
    if name == "freebsd":
        from . import freebsd

        return freebsd.IP_MAX_MEMBERSHIPS
    return None


def choose(
    raw_platform: str,
    env: Mapping[str, str],
    *,
    compiled: bool,
    batched: bool,
    memberships: int | None,
) -> Capabilities:
    """The capabilities for ``raw_platform`` (``sys.platform``) and ``env``.

    ``compiled``, ``batched`` and ``memberships`` are what the Linux host offers
    (the compiled drain importable, recvmmsg in libc, the sysctl's limit); they
    count only on the Linux profile, and the limit on Linux only.
    """
    name = platform_name(raw_platform)
    linux = name == "linux"
    forced = env.get(PORTABLE_ENV, "") not in ("", "0")
    if linux and not forced:
        return Capabilities(
            platform=name,
            profile="linux",
            why="Linux",
            datagram_interface=True,
            datagram_ttl=True,
            datagram_group=True,
            pinned_send=True,
            batched_send=compiled,
            keeper=True,
            querier=True,
            watch="netlink",
            batched_receive=batched,
            compiled_drain=compiled,
            multicast_all_needed=True,
            memberships_per_socket=memberships,
            procfs=True,
        )
    return Capabilities(
        platform=name,
        profile="portable",
        why=f"{PORTABLE_ENV}=1" if linux else "not Linux",
        datagram_interface=False,
        datagram_ttl=False,
        # The receive socket's group: one per socket on Unix (portable.plan_receive);
        # Windows' one socket per interface holds them all.
        datagram_group=name != "windows",
        pinned_send=False,
        batched_send=False,
        keeper=False,
        querier=False,
        watch="poll",
        batched_receive=False,
        compiled_drain=False,
        # The kernel, not the profile: Linux still delivers every joined group to
        # every socket unless told not to. macOS and the BSDs filter by each
        # socket's own memberships, and Windows has no such option.
        multicast_all_needed=linux,
        memberships_per_socket=memberships if linux else _other_memberships(name),
        procfs=linux,
    )


def _linux_memberships() -> int:
    from .linux.procfs import sysctl

    try:
        return int(sysctl("net/ipv4/igmp_max_memberships") or "")
    except ValueError:
        # No /proc (a container without it): the kernel's default.
        return LINUX_DEFAULT_MEMBERSHIPS


def capabilities() -> Capabilities:
    """What mcastio does on this platform, now (see :class:`Capabilities`).

    Read afresh on every call: the environment and the sysctl may change.
    """
    if platform_name(sys.platform) != "linux":
        return choose(sys.platform, os.environ, compiled=False, batched=False, memberships=None)
    # Imported here: both exist on Linux only (the drain loads libc's recvmmsg).
    from .. import _drain
    from .linux import mmsg as _mmsg

    return choose(
        sys.platform,
        os.environ,
        compiled=_drain.COMPILED,
        batched=_mmsg.available() and os.environ.get("MCASTIO_RECVMMSG", "1") != "0",
        memberships=_linux_memberships(),
    )


_NAMES = {"darwin": "macOS", "freebsd": "FreeBSD", "windows": "Windows", "linux": "Linux"}


def unavailable(feature: str, caps: Capabilities | None = None) -> MulticastError:
    """The error for ``feature`` asked for where ``caps`` (default: now) lacks it."""
    caps = caps if caps is not None else capabilities()
    if caps.platform == "linux":
        return MulticastError(
            f"{feature} is off in the portable profile ({PORTABLE_ENV}=1); "
            f"unset {PORTABLE_ENV} to use it"
        )
    where = _NAMES.get(caps.platform, caps.platform)
    return MulticastError(
        f"{feature} is not available on {where}: mcastio has it on Linux only "
        "(see docs/explanation/platforms.md)"
    )


def describe(caps: Capabilities) -> str:
    """One line for ``mcastio doctor``: the platform, its profile and what it offers."""
    if caps.profile == "linux":
        parts = ["netlink watch", "per-datagram interface, TTL and group", "keeper", "querier"]
        if caps.batched_receive:
            parts.append("recvmmsg")
        head = _NAMES.get(caps.platform, caps.platform)
    else:
        parts = [
            "polled watch",
            "interface and group from the receiving socket"
            if caps.datagram_group
            else "interface from the receiving socket, no group",
            "no TTL",
            "a transmit socket per interface",
            "no keeper",
            "no querier",
        ]
        head = f"{_NAMES.get(caps.platform, caps.platform)}, portable profile ({caps.why})"
    if caps.memberships_per_socket is not None:
        parts.append(f"{caps.memberships_per_socket} IPv4 memberships per socket")
    return f"{head}: {'; '.join(parts)}"
