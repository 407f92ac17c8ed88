"""Transmit sockets: one for every interface of an endpoint, or one per interface.

Kernel knowledge of the transmit sockets, beside :mod:`._net`'s of the receive
side. ``IP_MULTICAST_IF`` fixes one interface per socket, so a socket per
interface was the way to send out of several. But a socket on a port of its own
is also where the unicast replies to what it sent arrive, and a reply names only
that port: each endpoint needs a port of its own, and one socket per interface
per endpoint cost N descriptors per endpoint (800 for 100 endpoints on 8 links).
``IP_PKTINFO`` / ``IPV6_PKTINFO`` on ``sendmsg`` name the outgoing interface (and
the IPv4 source) per datagram, and for a multicast destination the kernel takes
that index before the socket's ``IP_MULTICAST_IF`` (udp_sendmsg: ``ipc.oif`` wins
over ``inet->mc_index``; ip6_datagram_send_ctl: ``fl6->flowi6_oif``), through the
same route lookup. So one socket per endpoint sends out of every interface, and
reads every reply (:func:`open_pinned_sender`). A socket bound to the group's port
reads nothing and is shared in the loop, one per interface (:func:`open_sender`).

The portable profile (``capabilities().pinned_send`` False) uses only what every
OS has: a socket per interface (:func:`open_sender` with ``portable``), picked
with ``IP_MULTICAST_IF``, no ``SO_BINDTODEVICE``, no pktinfo; each such socket
on a port of its own reads the replies to what it sent, with ``recvfrom``. With a
fixed source port each is bound to its interface's own address and that port
(:func:`fixed_port_sockaddr`), so one port serves every interface.
"""

from __future__ import annotations

import errno
import functools
import ipaddress
import socket
import struct
import sys
from dataclasses import dataclass

from . import _net
from ._errors import MulticastError
from ._model import Group, Interface
from ._origin import NO_ORIGIN, Origin
from ._platform import linux, platform_name
from ._platform.linux import sender as _linux_sender
from ._platform.linux.ancillary import IN6_PKTINFO, IN_PKTINFO

__all__ = [
    "Pin",
    "bound_to",
    "fixed_port_sockaddr",
    "open_pinned_sender",
    "open_sender",
    "pin",
    "repoint",
    "send_options",
    "sender_options",
]

#: Bytes of send buffer asked for: about 1,800 full-size datagrams queued on slow links.
SEND_BUFFER = 4 * 1024 * 1024
SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)

# struct cmsghdr { size_t cmsg_len; int cmsg_level; int cmsg_type; }, natively aligned.
_CMSGHDR = struct.Struct("@Nii")


def _cmsg(level: int, kind: int, data: bytes) -> bytes:
    """One packed cmsg, padded to CMSG_SPACE, as sendmsg and sendmmsg take it."""
    head = _CMSGHDR.pack(socket.CMSG_LEN(len(data)), level, kind)
    return (head + data).ljust(socket.CMSG_SPACE(len(data)), b"\0")


@dataclass(frozen=True, slots=True)
class Pin:
    """The pktinfo that sends a datagram out of one interface, in both forms."""

    #: (level, type, data), as ``socket.sendmsg`` takes it.
    cmsg: tuple[int, int, bytes]
    #: The packed cmsg, as the compiled sends take it.
    packed: bytes


def pin(family: socket.AddressFamily, iface: Interface, origin: Origin) -> Pin:
    """The pktinfo that sends one datagram out of ``iface``, from its source.

    IPv4 names the interface's first address as the source (``ipi_spec_dst``), or
    ``origin.address``; IPv6 names the index, and the source only when the origin
    fixes it (the socket is then bound to it anyway): the kernel picks the rest.
    """
    if family == socket.AF_INET:
        if origin.address:
            spec = ipaddress.IPv4Address(origin.address).packed
        else:
            spec = iface.ipv4[0].ip.packed if iface.ipv4 else bytes(4)
        return _pin(
            socket.IPPROTO_IP, _net.IP_PKTINFO, IN_PKTINFO.pack(iface.index, spec, bytes(4))
        )
    src6 = ipaddress.IPv6Address(origin.address).packed if origin.address else bytes(16)
    return _pin(socket.IPPROTO_IPV6, _net.IPV6_PKTINFO, IN6_PKTINFO.pack(src6, iface.index))


# Every endpoint on an interface sends with the same pktinfo: 4 endpoints on 1,024
# links make 4,096 senders, and only 1,024 distinct values.
@functools.lru_cache(maxsize=8192)
def _pin(level: int, kind: int, data: bytes) -> Pin:
    return Pin((level, kind, data), _cmsg(level, kind, data))


def open_pinned_sender(
    group: Group, iface: Interface, ttl: int, loopback: bool, *, origin: Origin
) -> socket.socket:
    """A non-blocking socket on a port of its own, for every interface of one endpoint.

    It names no interface itself: every send carries its interface's :func:`pin`. It reads the
    unicast replies to what it sent, with the arrival interface in the pktinfo,
    and, ``IP_MULTICAST_ALL`` off, no group's datagrams. ``iface`` scopes a
    link-local ``origin.address`` only.
    """
    what = "a transmit socket"
    sock = _net._new_socket(group.family, what)
    with _net._closed_on_failure(sock, what):
        sender_options(sock, group.family)
        _bind_own_port(sock, group, iface, origin)
        # One buffer for every interface's copies: a link whose queue holds its
        # datagrams (charged to the socket until sent) must not fill it for the rest.
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, SEND_BUFFER)
        except PermissionError:
            # Without CAP_NET_ADMIN: as much as net.core.wmem_max allows.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        send_options(sock, group.family, ttl, loopback, origin.tos)
    return sock


# -- a socket per interface (the group's port; the relay) ---------------------------


def open_sender(
    group: Group,
    iface: Interface,
    ttl: int,
    loopback: bool,
    *,
    group_port: int | None = None,
    origin: Origin = NO_ORIGIN,
    portable: bool = False,
) -> socket.socket:
    """A non-blocking socket whose multicast leaves by ``iface`` only.

    By default it is bound to an ephemeral port and reads the unicast replies to
    what it sends, with the arrival interface in the pktinfo. With ``group_port``
    it is bound to (group, group_port), so copies leave from the group's port, and
    it receives nothing at all: no unicast (the group is never a unicast destination)
    and no multicast (it joins nothing and takes no other socket's groups).
    ``origin`` sets the TOS byte, the source address and a fixed source port.
    ``portable``: only options every OS has (no device binding, no pktinfo, the
    IPv4 interface named by its address); replies are then read with ``recvfrom``
    and belong to this socket's interface.
    """
    sock = _net._new_socket(group.family, f"a transmit socket on {iface.name}")
    with _net._closed_on_failure(sock, f"a transmit socket on {iface.name}"):
        if portable:
            _portable_options(sock, group.family)
        else:
            sender_options(sock, group.family)
            _bind_to_device(sock, iface.name)
        if group_port is not None:
            scope = iface.index if _net.bind_needs_scope(group) else 0
            addr = _net._group_sockaddr(group, group_port, scope)
            if portable:
                # As the portable receive sockets bind: SO_REUSEADDR on a group address
                # is SO_REUSEPORT too on the BSDs (xnu in_pcbbind()); no SO_REUSEPORT,
                # which CPython lacks on Windows.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(addr)
            else:
                _net._bind_shared(sock, addr)
        else:
            _bind_own_port(sock, group, iface, origin, portable=portable)
        if group.family == socket.AF_INET:
            if portable:
                _multicast_if_by_address(sock, iface, origin)
            else:
                _multicast_if_v4(sock, iface, origin)
        else:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, iface.index)
        send_options(sock, group.family, ttl, loopback, origin.tos)
    return sock


def sender_options(sock: socket.socket, family: socket.AddressFamily) -> None:
    """What every transmit socket reads: replies with their pktinfo, no group's datagrams."""
    if family == socket.AF_INET:
        # Default 1 would hand this socket groups other sockets joined on its port.
        _linux_sender.no_other_groups(sock, family)
        sock.setsockopt(socket.IPPROTO_IP, _net.IP_PKTINFO, 1)
    else:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        _linux_sender.no_other_groups(sock, family)
        sock.setsockopt(socket.IPPROTO_IPV6, _net.IPV6_RECVPKTINFO, 1)


def repoint(sock: socket.socket, iface: Interface, origin: Origin) -> None:
    """Point a portable socket's multicast at ``iface`` as it is now (a new address).

    For a socket bound to the wildcard (an ephemeral port): it keeps its port, which
    responders may have learnt, and only ``IP_MULTICAST_IF`` changes. A socket bound
    to the old address with a fixed port is re-opened instead (:func:`bound_to`).
    """
    try:
        if sock.family == socket.AF_INET:
            _multicast_if_by_address(sock, iface, origin)
        else:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, iface.index)
    except OSError as exc:
        raise MulticastError(f"cannot point the transmit socket at {iface.name}: {exc}") from exc


def _portable_options(sock: socket.socket, family: socket.AddressFamily) -> None:
    """The portable profile's reading options: no pktinfo, other groups kept out."""
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    # Linux's kernel (portable profile forced there) hands a socket every group any
    # socket joined on its port unless told not to; macOS, the BSDs and Windows filter
    # by the socket's own memberships (docs/explanation/platforms.md).
    if platform_name(sys.platform) == "linux":
        _linux_sender.no_other_groups(sock, family)


def send_options(
    sock: socket.socket, family: socket.AddressFamily, ttl: int, loopback: bool, tos: int | None
) -> None:
    """TTL, loopback and the TOS byte of every copy; then non-blocking."""
    v4 = family == socket.AF_INET
    if tos is not None:
        # Every datagram's DSCP/ECN byte; the kernel's default is 0 (best effort).
        sock.setsockopt(
            *(
                (socket.IPPROTO_IP, socket.IP_TOS)
                if v4
                else (socket.IPPROTO_IPV6, _net.IPV6_TCLASS)
            ),
            tos,
        )
    level = socket.IPPROTO_IP if v4 else socket.IPPROTO_IPV6
    sock.setsockopt(level, socket.IP_MULTICAST_TTL if v4 else socket.IPV6_MULTICAST_HOPS, ttl)
    sock.setsockopt(
        level, socket.IP_MULTICAST_LOOP if v4 else socket.IPV6_MULTICAST_LOOP, int(loopback)
    )
    sock.setblocking(False)


def _multicast_if_v4(sock: socket.socket, iface: Interface, origin: Origin) -> None:
    src = iface.ipv4[0].ip.packed if iface.ipv4 else b"\0\0\0\0"
    src = ipaddress.IPv4Address(origin.address).packed if origin.address else src
    # By index and address (Linux's ip_mreqn): the index picks the device even
    # when two interfaces share an address, the address becomes the source.
    _linux_sender.multicast_if(sock, iface.index, src)


def _multicast_if_by_address(sock: socket.socket, iface: Interface, origin: Origin) -> None:
    """IPv4 ``IP_MULTICAST_IF`` as every OS takes it: a 4-byte interface address.

    Linux (net/ipv4/ip_sockglue.c), macOS and FreeBSD (netinet/ip_output.c,
    ``ip_setmoptions``: ``struct in_addr``) and Windows (ws2ipdef.h; Microsoft's
    "IPPROTO_IP socket options": an IPv4 address in network byte order) all take it.
    The address is also the copies' source. Two interfaces sharing one address
    cannot be told apart this way: the kernel takes the first with it.
    """
    if origin.address:
        src = ipaddress.IPv4Address(origin.address).packed
    elif iface.ipv4:
        src = iface.ipv4[0].ip.packed
    else:
        raise MulticastError(f"{iface.name} has no IPv4 address to send IPv4 multicast from")
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, src)


def _bind_own_port(
    sock: socket.socket, group: Group, iface: Interface, origin: Origin, *, portable: bool = False
) -> None:
    """Bind a transmit socket to a port of its own: ephemeral, or the fixed one asked for."""
    port, v6 = origin.port or 0, group.family == socket.AF_INET6
    fixed = fixed_port_sockaddr(group, iface, origin) if portable else None
    if fixed is not None:
        addr: tuple[str, int] | tuple[str, int, int, int] = fixed
    else:
        # IPv4 takes a multicast source from IP_MULTICAST_IF's address, so the wildcard
        # still takes replies to any address; IPv6 takes it from the bind (or the route) only.
        source = origin.address if v6 else None
        scope = iface.index if source and ipaddress.IPv6Address(source).is_link_local else 0
        addr = (source, port, 0, scope) if source else ("::" if v6 else "0.0.0.0", port)
    try:
        sock.bind(addr)
    except OSError as exc:
        if fixed is not None and exc.errno != errno.EADDRINUSE:
            raise MulticastError(
                f"cannot bind the transmit socket on {iface.name} to {addr[0]} port {port}: {exc}"
            ) from exc
        if exc.errno != errno.EADDRINUSE or not port:
            raise
        # No SO_REUSEADDR: sharing a port, a device-bound socket takes its owner's unicast.
        where = f" on {addr[0]} ({iface.name})" if fixed is not None else ""
        raise MulticastError(
            f"source port {port} is in use{where} (EADDRINUSE); choose another"
        ) from exc


def fixed_port_sockaddr(
    group: Group, iface: Interface, origin: Origin
) -> tuple[str, int] | tuple[str, int, int, int] | None:
    """Where a portable socket with a fixed source port binds; None for an ephemeral port.

    Without a device binding, sockets on one port are told apart by their local
    address alone, as every OS's bind allows: a UDP port is taken per local address
    (FreeBSD ``in_pcbbind_setup()``, sys/netinet/in_pcb.c: ``in_pcblookup_local()``
    on the address asked for; xnu ``in_pcbbind()``; Linux ``udp_lib_lport_inuse()``;
    Winsock's "Using SO_REUSEADDR and SO_EXCLUSIVEADDRUSE" page), so each
    interface's socket binds its own address: IPv4 the interface's first address,
    IPv6 a link-local one (scoped to the interface: the same fe80:: address on two
    links is two addresses; Linux then also ties the socket to that device) for a
    link-scope group, else one that may leave the link; or ``origin.address`` where
    asked. The bound address is also every copy's source: Linux ``udp_sendmsg()``
    takes ``inet_saddr`` before ``IP_MULTICAST_IF``'s, FreeBSD's
    ``in_pcbconnect_setup()`` looks at the multicast interface only for an unbound
    ``inp_laddr``, IPv6 takes the bound address on every OS; here it agrees with
    ``IP_MULTICAST_IF``'s anyway. Replies to (that address, port) reach this socket.
    Raises MulticastError when the interface has no address of the family.
    """
    port = origin.port
    if not port:
        return None
    if group.family == socket.AF_INET:
        if origin.address:
            return (origin.address, port)
        if not iface.ipv4:
            raise MulticastError(f"{iface.name} has no IPv4 address to bind source port {port} to")
        return (str(iface.ipv4[0].ip), port)
    if origin.address:
        chosen = ipaddress.IPv6Address(origin.address)
    else:
        local = [a.ip for a in iface.ipv6 if a.ip.is_link_local]
        wide = [a.ip for a in iface.ipv6 if not a.ip.is_link_local]
        # A link-local source never leaves the link (RFC 4291 2.5.6): wider groups
        # take a wider address where the interface has one, as source selection would.
        ordered = local + wide if group.link_scoped else wide + local
        if not ordered:
            raise MulticastError(f"{iface.name} has no IPv6 address to bind source port {port} to")
        chosen = ordered[0]
    return (chosen.compressed, port, 0, iface.index if chosen.is_link_local else 0)


def bound_to(sock: socket.socket, sockaddr: tuple[str, int] | tuple[str, int, int, int]) -> bool:
    """Whether ``sock`` is bound to ``sockaddr`` (address, port and IPv6 scope)."""
    here = sock.getsockname()
    same_ip = ipaddress.ip_address(here[0]) == ipaddress.ip_address(sockaddr[0])
    return same_ip and tuple(here[1:]) == tuple(sockaddr[1:])


def _bind_to_device(sock: socket.socket, ifname: str) -> None:
    """Tie a transmit socket to the interface its copies leave by.

    On an ephemeral port: unicast to that port from any other link finds no socket,
    so a flood on an excluded link never wakes the endpoint. On the group's port: a
    device-bound socket never shares a reuseport group with the receive socket.
    """
    try:
        linux.bind_to_device(sock, ifname)
    except OSError as exc:
        # Linux < 5.7 wants CAP_NET_RAW; the receive side then drops other links' replies.
        if exc.errno != errno.EPERM:
            raise
