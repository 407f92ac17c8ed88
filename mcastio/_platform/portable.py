"""The portable receive plan: which receive sockets, bound where, joined on what.

Where the kernel gives no arrival interface per datagram (Windows always; the
portable profile everywhere), which socket read a datagram has to say it. So
each socket is joined on one interface only, and the kernel must deliver to it
only what arrived there:

- **Unix (Linux, macOS, FreeBSD): one socket per (interface, group), bound to
  the group.** A UDP socket bound to a multicast address reads only datagrams
  sent to that address, so the group is known as well. The BSDs deliver a
  datagram only to sockets holding the group on the arrival interface
  (``udp_input()`` asks ``imo_multi_filter()`` with the arrival ``ifp``: xnu
  bsd/netinet/udp_usrreq.c and in_mcast.c, FreeBSD sys/netinet/udp_usrreq.c),
  and Linux does so once ``IP_MULTICAST_ALL`` is 0 (``ip_mc_sf_allow()``). A
  link-scoped IPv6 group is bound with the interface as scope id, which binds
  the socket to that interface on every one of them.
- **Linux, IPv6 wider than the link: refused.** Linux checks an IPv6 socket's
  memberships by address alone (``inet6_mc_check()``; see :mod:`mcastio._receive`),
  so a socket joined on one interface would read the group's datagrams from all
  of them, each once per socket: a wrong interface, not a missing one. The plan
  says so instead of delivering it.
- **Windows: one socket per interface, bound to its first address of the
  family, joined to every group there.** Winsock cannot bind a multicast
  address, and a socket bound to an interface's address reads the multicast of
  that interface (the practice of multicast-expert's Windows path, the only one
  that works there without WSARecvMsg). The group is known only when there is
  one; with several it is ``None``, as the capabilities say.

The TTL is never known on this path (no control messages): ``Datagram.ttl`` is
``None``. Pure: interfaces and groups in, frozen values out.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .._errors import MulticastError
from .._model import Group, Interface

__all__ = ["ReceiveSocket", "plan_changes", "plan_receive"]


@dataclass(frozen=True, slots=True)
class ReceiveSocket:
    """One receive socket of the portable path."""

    #: The interface it reads, by name (what ``Datagram.interface`` says) and index.
    interface: str
    index: int
    family: socket.AddressFamily
    #: What it is bound to: a group (Unix) or the interface's address (Windows).
    bind_address: str
    #: The IPv6 scope id of the bind: the interface's index for a link-scoped
    #: group or a link-local address, else 0 (and 0 for IPv4).
    scope: int
    #: The groups it joins, each on ``index`` only.
    groups: tuple[Group, ...]
    #: The group every datagram it reads was sent to, or None where that cannot be told.
    group: str | None


def _unix(iface: Interface, group: Group, platform: str) -> ReceiveSocket:
    v6 = group.family == socket.AF_INET6
    if v6 and platform == "linux" and not group.link_scoped:
        raise MulticastError(
            f"the portable path cannot tell the arrival interface of {group} on Linux: "
            "its kernel matches IPv6 memberships by address, not by interface; "
            "unset MCASTIO_PORTABLE, or use a link-scoped group (ff02::/16)"
        )
    return ReceiveSocket(
        interface=iface.name,
        index=iface.index,
        family=group.family,
        bind_address=str(group),
        scope=iface.index if v6 and group.link_scoped else 0,
        groups=(group,),
        group=str(group),
    )


def _windows(iface: Interface, groups: Sequence[Group]) -> ReceiveSocket | None:
    family = groups[0].family
    if family == socket.AF_INET:
        if not iface.ipv4:
            return None
        address, scope = str(iface.ipv4[0].ip), 0
    else:
        if not iface.ipv6:
            return None
        ip = iface.ipv6[0].ip
        address, scope = str(ip), iface.index if ip.is_link_local else 0
    return ReceiveSocket(
        interface=iface.name,
        index=iface.index,
        family=family,
        bind_address=address,
        scope=scope,
        groups=tuple(groups),
        group=str(groups[0]) if len(groups) == 1 else None,
    )


def plan_receive(
    interfaces: Iterable[Interface], groups: Sequence[Group], *, platform: str
) -> tuple[ReceiveSocket, ...]:
    """The receive sockets for ``groups`` on ``interfaces`` (already chosen).

    ``platform`` is :func:`mcastio._platform.platform_name`'s. The groups are of
    one family (an endpoint's are). On Windows an interface without an address
    of that family gets no socket: there is nothing to bind it to. Raises
    :class:`MulticastError` where this path would misreport the interface.
    """
    if not groups:
        return ()
    if len({g.family for g in groups}) != 1:
        raise ValueError("the groups of one plan are of one family")
    plan: list[ReceiveSocket] = []
    for iface in sorted(interfaces, key=lambda i: i.index):
        if platform == "windows":
            item = _windows(iface, groups)
            if item is not None:
                plan.append(item)
        else:
            plan.extend(_unix(iface, g, platform) for g in groups)
    return tuple(plan)


def plan_changes(
    held: Sequence[ReceiveSocket], wanted: Sequence[ReceiveSocket]
) -> tuple[tuple[ReceiveSocket, ...], tuple[ReceiveSocket, ...]]:
    """(to open, to close) to go from the sockets ``held`` to those ``wanted``.

    A socket whose binding or groups changed (an interface's address moved, on
    Windows) is closed and opened anew: a bound socket cannot be re-bound.
    """
    keep = set(held)
    need = set(wanted)
    return (
        tuple(w for w in wanted if w not in keep),
        tuple(h for h in held if h not in need),
    )
