"""The setsockopt and errno decisions every OS's UDP sockets share.

Creating a socket and closing it when its set-up fails, the shared bind to a
group's port, the errno classes a send or a leave meets, the unicast sockets,
the receive buffer sizes. The Linux profile's receive socket and its joins
(``IP_MULTICAST_ALL``, ``SO_MEMINFO``, ``ip_mreqn``...) are
:mod:`._platform.linux.receiver`'s; Linux's option numbers and control-message
layouts are :mod:`._platform.linux`'s.

Each kernel quirk carries a one-line note saying why. Nothing here knows about
asyncio: these are blocking-free helpers over non-blocking sockets.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
from collections.abc import Iterator

from ._errors import MulticastError
from ._model import Group
from ._platform import linux
from ._platform.cmsg import cmsg_space

__all__ = [
    "ANC_BUFSIZE",
    "MSG_TRUNC",
    "RECV_BUFSIZE",
    "bind_needs_scope",
    "gone_error",
    "is_gone_error",
    "is_link_refusal",
    "open_unicast",
    "still_full_error",
]

_log = logging.getLogger("mcastio")

# CPython's number where its socket module names the option (the OS's own, from its
# headers); else Linux's, from the uapi headers (:mod:`._platform.linux`). Only the
# Linux profile reads pktinfo and TTLs; the portable one sets IPV6_TCLASS alone.
IP_PKTINFO = getattr(socket, "IP_PKTINFO", linux.IP_PKTINFO)
IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", linux.IPV6_RECVPKTINFO)
IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", linux.IPV6_PKTINFO)
IP_RECVTTL = getattr(socket, "IP_RECVTTL", linux.IP_RECVTTL)
IP_TTL = getattr(socket, "IP_TTL", linux.IP_TTL)
IPV6_RECVHOPLIMIT = getattr(socket, "IPV6_RECVHOPLIMIT", linux.IPV6_RECVHOPLIMIT)
IPV6_HOPLIMIT = getattr(socket, "IPV6_HOPLIMIT", linux.IPV6_HOPLIMIT)
IPV6_TCLASS = getattr(socket, "IPV6_TCLASS", linux.IPV6_TCLASS)

# A plain int: '&' on the IntFlag member runs Python code for every datagram.
MSG_TRUNC = int(socket.MSG_TRUNC)

# Largest UDP payload plus one, so MSG_TRUNC can tell an oversize datagram apart.
RECV_BUFSIZE = 65536
# Room for pktinfo, a TTL or hop limit and the drop counter, with headroom.
ANC_BUFSIZE = cmsg_space(64) + 2 * cmsg_space(4)


def _new_socket(family: socket.AddressFamily, what: str) -> socket.socket:
    """A UDP socket; a refusal (EMFILE, ENFILE, ENOBUFS) becomes a MulticastError."""
    try:
        return socket.socket(family, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    except OSError as exc:
        hint = ""
        if exc.errno in (errno.EMFILE, errno.ENFILE):
            # Transient for a watching endpoint: it retries once descriptors free up.
            hint = " (out of file descriptors: see ulimit -n / RLIMIT_NOFILE)"
        raise MulticastError(f"cannot open {what}: {exc}{hint}") from exc


@contextlib.contextmanager
def _closed_on_failure(sock: socket.socket, what: str) -> Iterator[None]:
    """Close ``sock`` if setting it up fails; an OSError becomes a MulticastError."""
    try:
        yield
    except OSError as exc:
        sock.close()
        raise MulticastError(f"cannot open {what}: {exc}") from exc
    except BaseException:
        sock.close()
        raise


def bind_needs_scope(group: Group) -> bool:
    """Whether a socket bound to ``group`` must name one interface (link-scope IPv6).

    The kernel's inet6_bind refuses a link- or interface-local multicast address
    without a scope id (EINVAL), and with one it binds the socket to that device.
    """
    return group.family == socket.AF_INET6 and group.address.packed[1] & 0x0F <= 2


def _bind_shared(sock: socket.socket, addr: tuple[str, int] | tuple[str, int, int, int]) -> None:
    """Bind to a port other programs use too, without taking their unicast."""
    # Shares the port with every program that set it as well (avahi, zeroconf, socat).
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        # A program holds the port with SO_REUSEPORT alone: the kernel admits a
        # second bind only with it set too, so our sockets may share a reuseport group.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind(addr)
        except OSError as again:
            if again.errno != errno.EADDRINUSE:
                raise
            raise _port_taken(addr[1]) from again
        return
    # Set after the bind, so a program binding later with SO_REUSEPORT alone still can,
    # while our sockets on one address form no reuseport group: the kernel hands a
    # datagram that matches one socket's membership to any socket of such a group.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)


def _group_sockaddr(
    group: Group, port: int, scope: int
) -> tuple[str, int] | tuple[str, int, int, int]:
    # Bound to the group address, not the wildcard, the socket never matches a unicast
    # destination: unicast to the port goes to the program bound to it, whichever started first.
    if group.family == socket.AF_INET:
        return (str(group.address), port)
    return (str(group.address), port, 0, scope)


def _port_taken(port: int) -> MulticastError:
    # SO_REUSEADDR lets sockets share a port only if every one of them set it.
    return MulticastError(
        f"port {port} is already in use (EADDRINUSE) by a socket that did not set "
        "SO_REUSEADDR; stop that program, let it set SO_REUSEADDR, or use another port"
    )


def gone_error(ifname: str) -> OSError:
    """What a send reports when its interface left while it waited."""
    return OSError(errno.ENODEV, f"{ifname} went away before the send")


def still_full_error() -> OSError:
    """What a send reports when its socket buffer never drained."""
    return OSError(errno.ENOBUFS, "the socket buffer stayed full for 1 s")


def is_gone_error(exc: OSError) -> bool:
    """The interface or membership no longer exists, so there is nothing to undo."""
    return exc.errno in (errno.ENODEV, errno.EADDRNOTAVAIL, errno.ENOENT, errno.ENXIO, errno.EINVAL)


# Sends on a link fail with these until the link changes: WireGuard without a peer
# (ENOKEY), no route for the group there (ENETUNREACH, EHOSTUNREACH), a firewall
# rejecting output (EPERM, EACCES), the link or its source address gone.
_LINK_REFUSALS = {errno.ENOKEY, errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EPERM, errno.EACCES}
_LINK_REFUSALS |= {errno.ENETDOWN, errno.EADDRNOTAVAIL}


def is_link_refusal(exc: OSError) -> bool:
    """A send failed because of the link, not the moment: retrying before it changes is futile."""
    return exc.errno in _LINK_REFUSALS


def open_unicast(address: str, port: int, scope_id: int = 0) -> socket.socket:
    """A non-blocking UDP socket bound to one local unicast address and the port.

    Bound to the exact address, it takes the unicast datagrams sent there ahead of a
    wildcard-bound socket on the same port, and never the port's multicast.
    """
    v6 = ":" in address
    family = socket.AF_INET6 if v6 else socket.AF_INET
    where = f"[{address}]:{port}" if v6 else f"{address}:{port}"
    sock = _new_socket(family, f"a unicast socket on {where}")
    with _closed_on_failure(sock, f"a unicast socket on {where}"):
        # Another program (or mcastio's own receive socket) may hold the port already.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if v6:
            # Otherwise the socket would also take IPv4 datagrams as mapped addresses.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            # A link-local address needs its interface, and binds the socket to it.
            sock.bind((address, port, 0, scope_id))
        else:
            sock.bind((address, port))
        sock.setblocking(False)
    return sock
