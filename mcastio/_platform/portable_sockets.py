"""The portable path's receive sockets: open one as planned, and read it.

:mod:`.portable` decides which sockets; this opens each (bound as planned, joined
by index with :mod:`.joins`, all-or-nothing) and reads it with ``recvfrom``,
which every OS's CPython has (``recvmsg`` is absent on Windows). The interface
of a datagram is its socket's, the group the socket's when it has one, the TTL
``None``. Every ``OSError`` leaves as a :class:`MulticastError`.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
from collections.abc import Sequence

from .._errors import MulticastError
from .._model import Datagram
from . import linux
from .joins import join_request
from .portable import ReceiveSocket

__all__ = ["open_receive", "read_datagrams", "read_replies"]

_log = logging.getLogger("mcastio")

# The largest UDP payload fits: recvfrom never truncates at this size.
_BUFSIZE = 65536


def _where(item: ReceiveSocket) -> str:
    return f"{item.bind_address} on {item.interface}"


def open_receive(
    item: ReceiveSocket, port: int, *, platform: str, sources: Sequence[str] = ()
) -> socket.socket:
    """A non-blocking socket bound and joined as ``item`` says, or MulticastError.

    With ``sources``, each group is joined from each source (SSM) instead of
    from any. On failure nothing stays open and no membership is held.
    """
    try:
        sock = socket.socket(item.family, socket.SOCK_DGRAM)
    except OSError as exc:
        raise MulticastError(f"cannot open a receive socket for {_where(item)}: {exc}") from exc
    try:
        # Shares the port with every other program that set it too; a bind to a
        # multicast address with it counts as SO_REUSEPORT on the BSDs (xnu
        # in_pcbbind(): "Treat SO_REUSEADDR as SO_REUSEPORT for multicast").
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if platform == "linux" and item.family == socket.AF_INET:
            # Else Linux delivers every group joined by any socket on the host.
            linux.no_other_groups(sock, item.family)
        if item.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((item.bind_address, port, 0, item.scope))
        else:
            sock.bind((item.bind_address, port))
        for group in item.groups:
            for source in sources or (None,):
                origin = None if source is None else ipaddress.ip_address(source)
                sock.setsockopt(*join_request(platform, group.address, item.index, origin))
        sock.setblocking(False)
    except (OSError, ValueError) as exc:
        # Closing the socket drops whatever it joined: all or nothing.
        sock.close()
        raise MulticastError(f"cannot receive {_where(item)}:{port}: {exc}") from exc
    return sock


def read_datagrams(
    sock: socket.socket, item: ReceiveSocket, budget: int = 64
) -> tuple[list[Datagram], int]:
    """Up to ``budget`` datagrams waiting on ``sock``: (datagrams, reads).

    Stops when the socket is empty. A read error other than "nothing waiting"
    is logged and ends the read: an unconnected UDP socket has no peer whose
    error could be waiting, so there is nothing to report to a caller.
    """
    return _read(sock, item.group, item.interface, _where(item), budget)


def read_replies(
    sock: socket.socket, interface: str, budget: int = 64
) -> tuple[list[Datagram], int]:
    """The replies waiting on the transmit socket of ``interface``: (datagrams, reads).

    No control message names where each arrived: the socket's interface is the
    best answer (a reply answers what this socket sent out of it).
    """
    return _read(sock, None, interface, f"the transmit socket on {interface}", budget)


def _read(
    sock: socket.socket, group: str | None, interface: str, where: str, budget: int
) -> tuple[list[Datagram], int]:
    batch: list[Datagram] = []
    reads = 0
    while reads < budget:
        try:
            data, source = sock.recvfrom(_BUFSIZE)
        except (BlockingIOError, InterruptedError):
            break
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):
                _log.warning("receive error on %s: %s", where, exc)
            break
        reads += 1
        batch.append(Datagram(data, source, group, interface, None))
    return batch, reads
