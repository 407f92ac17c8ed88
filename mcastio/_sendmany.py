"""Many datagrams to the group in few system calls: ``sendmmsg``, and UDP GSO where it holds.

With the compiled extension (:mod:`._drain`) one ``sendmmsg`` call carries up to
1024 datagrams, and a run of same-size datagrams that fit the link goes as one
UDP GSO message (``UDP_SEGMENT``: the kernel splits it into datagrams after
routing, so a 64-datagram burst costs one trip through the stack). Without it
the same datagrams go out with one ``sendto`` each: the results are the same,
only the cost differs. Nothing here knows about asyncio.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Sequence
from dataclasses import dataclass

from . import _drain
from ._model import Group
from ._txnet import Pin

__all__ = ["GSO_MAX_BYTES", "GSO_MAX_SEGMENTS", "BatchSendResult", "Payload", "push", "sockaddr"]

Payload = bytes | bytearray | memoryview

#: The kernel's cap on segments per GSO message (UDP_MAX_SEGMENTS).
GSO_MAX_SEGMENTS = 64
#: A GSO message is one UDP datagram before it is split: it must fit 64 KiB.
GSO_MAX_BYTES = 65000
#: Segments no larger than this: above it a segment may not fit a link's MTU, and
#: the kernel refuses a GSO segment that would need IP fragmentation.
GSO_MAX_SEGMENT = 1400
# What a socket answers when GSO cannot apply on its route (no checksum offload on
# the device: EIO; segment over the MTU: EINVAL; kernel without it: ENOPROTOOPT).
_NO_GSO = (errno.EIO, errno.EINVAL, errno.ENOPROTOOPT, errno.EOPNOTSUPP)

#: Whether runs of same-size datagrams go as one GSO message; benchmarks compare.
USE_GSO = True


@dataclass(frozen=True, slots=True)
class BatchSendResult:
    """The outcome of sending many datagrams out of one interface."""

    interface: str
    #: How many datagrams the kernel accepted: the first ``sent`` of them, in order.
    sent: int
    #: What stopped the rest, or None when every datagram was sent.
    error: OSError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def sockaddr(group: Group, port: int) -> bytes:
    """The packed ``sockaddr_in``/``sockaddr_in6`` of (group, port), as sendmmsg takes it."""
    port_be = socket.htons(port).to_bytes(2, "little")
    family = int(group.family).to_bytes(2, "little")
    if group.family == socket.AF_INET:
        return family + port_be + group.address.packed + bytes(8)
    return family + port_be + bytes(4) + group.address.packed + bytes(4)


class GsoState:
    """Whether one transmit socket still tries GSO (its route refused it once: no)."""

    __slots__ = ("usable",)

    def __init__(self) -> None:
        self.usable = True


def _same_size_run(payloads: Sequence[Payload], start: int) -> int:
    """How many datagrams from ``start`` can go as one GSO message (0 or 1: none)."""
    size = len(payloads[start])
    if not 0 < size <= GSO_MAX_SEGMENT:
        return 0
    limit = min(len(payloads), start + GSO_MAX_SEGMENTS, start + GSO_MAX_BYTES // size)
    end = start + 1
    while end < limit and len(payloads[end]) == size:
        end += 1
    return end - start


def push(
    tx: socket.socket,
    payloads: Sequence[Payload],
    start: int,
    address: bytes,
    dest: tuple[str, int],
    gso: GsoState,
    pin: Pin | None = None,
    *,
    batched: bool = True,
) -> int:
    """Send ``payloads[start:]`` until done or the socket refuses; the index reached.

    ``pin`` names the interface per datagram, for a socket that names none (:mod:`._txnet`).
    ``batched`` False (the portable profile): one ``sendto`` each, never sendmmsg or GSO.

    Raises the OSError that stopped it when nothing more could be sent (a full
    buffer is ``BlockingIOError``); what was sent before that is in the index.
    """
    cdrain = _drain.cdrain if batched else None
    at = start
    total = len(payloads)
    cmsgs = [pin.cmsg] if pin is not None else []
    control = (pin.packed,) if pin is not None else ()
    while at < total:
        if cdrain is None:
            try:
                if pin is None:
                    tx.sendto(payloads[at], dest)
                else:
                    tx.sendmsg([payloads[at]], cmsgs, 0, dest)
            except OSError:
                if at > start:
                    return at
                raise
            at += 1
            continue
        fd = tx.fileno()
        run = _same_size_run(payloads, at) if USE_GSO and gso.usable else 0
        if run > 1:
            try:
                cdrain.send_many(fd, payloads[at : at + run], address, len(payloads[at]), *control)
            except OSError as exc:
                if exc.errno not in _NO_GSO:
                    if at > start:
                        return at
                    raise
                # Not on this route: plain sendmmsg from now on, for this socket.
                gso.usable = False
                continue
            at += run
            continue
        chunk = payloads[at : at + cdrain.MAX_SEND]
        try:
            sent = int(cdrain.send_many(fd, chunk, address, 0, *control))
        except OSError:
            if at > start:
                return at
            raise
        at += sent
        if sent < len(chunk):
            # The buffer filled: the next call would fail with EAGAIN.
            return at
    return at
