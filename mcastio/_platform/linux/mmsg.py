"""``recvmmsg(2)`` through ctypes, and the layouts of the kernel structures it fills.

A sibling of :mod:`._net` dedicated to batched reads: the ``mmsghdr``, ``msghdr``,
``iovec``, ``sockaddr_in``/``sockaddr_in6`` and ``cmsghdr`` layouts are declared as
``ctypes.Structure`` so they are right on every ABI, and every control message
the receive sockets can carry is parsed here (unknown ones are skipped). Nothing
here knows about asyncio. No build step: when libc has no ``recvmmsg`` (not
Linux), :func:`available` says so and the receive path keeps plain ``recvmsg``.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import socket
import struct
from collections.abc import Iterator

from ... import _net
from . import SO_RXQ_OVFL

__all__ = ["Buffers", "Control", "available", "parse_control", "parse_sockaddr", "split_drops"]

# Plain ints: '&' on the IntFlag members runs Python code for every datagram.
MSG_TRUNC = int(socket.MSG_TRUNC)
_MSG_DONTWAIT = int(socket.MSG_DONTWAIT)


class IoVec(ctypes.Structure):
    _fields_ = (("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t))


class MsgHdr(ctypes.Structure):
    _fields_ = (
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),  # socklen_t
        ("msg_iov", ctypes.c_void_p),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    )


class MMsgHdr(ctypes.Structure):
    _fields_ = (("msg_hdr", MsgHdr), ("msg_len", ctypes.c_uint))


class CMsgHdr(ctypes.Structure):
    _fields_ = (
        ("cmsg_len", ctypes.c_size_t),
        ("cmsg_level", ctypes.c_int),
        ("cmsg_type", ctypes.c_int),
    )


class SockaddrIn(ctypes.Structure):
    _fields_ = (
        ("sin_family", ctypes.c_ushort),
        ("sin_port", ctypes.c_uint8 * 2),  # network order
        ("sin_addr", ctypes.c_uint8 * 4),
        ("sin_zero", ctypes.c_uint8 * 8),
    )


class SockaddrIn6(ctypes.Structure):
    _fields_ = (
        ("sin6_family", ctypes.c_ushort),
        ("sin6_port", ctypes.c_uint8 * 2),  # network order
        ("sin6_flowinfo", ctypes.c_uint8 * 4),  # network order
        ("sin6_addr", ctypes.c_uint8 * 16),
        ("sin6_scope_id", ctypes.c_uint32),
    )


class InPktinfo(ctypes.Structure):
    _fields_ = (
        ("ipi_ifindex", ctypes.c_int),
        ("ipi_spec_dst", ctypes.c_uint8 * 4),
        ("ipi_addr", ctypes.c_uint8 * 4),
    )


class In6Pktinfo(ctypes.Structure):
    _fields_ = (("ipi6_addr", ctypes.c_uint8 * 16), ("ipi6_ifindex", ctypes.c_uint))


def _offset(struct_type: type[ctypes.Structure], field: str) -> int:
    return int(getattr(struct_type, field).offset)


def _reader(struct_type: type[ctypes.Structure], fields: list[tuple[int, type]]) -> struct.Struct:
    """A Struct that reads ``fields`` (offset, ctypes type) out of one ``struct_type``."""
    fmt, pos = "@", 0
    for offset, ctype in fields:
        fmt += f"{offset - pos}x{ctype._type_}"  # type: ignore[attr-defined]
        pos = offset + ctypes.sizeof(ctype)
    fmt += f"{ctypes.sizeof(struct_type) - pos}x"
    reader = struct.Struct(fmt)
    assert reader.size == ctypes.sizeof(struct_type), fmt
    return reader


_HDR = _offset(MMsgHdr, "msg_hdr")
#: What the kernel reports per message: (msg_controllen, msg_flags, msg_len).
RESULT = _reader(
    MMsgHdr,
    [
        (_HDR + _offset(MsgHdr, "msg_controllen"), ctypes.c_size_t),
        (_HDR + _offset(MsgHdr, "msg_flags"), ctypes.c_int),
        (_offset(MMsgHdr, "msg_len"), ctypes.c_uint),
    ],
)
_CMSG = _reader(
    CMsgHdr,
    [
        (_offset(CMsgHdr, "cmsg_len"), ctypes.c_size_t),
        (_offset(CMsgHdr, "cmsg_level"), ctypes.c_int),
        (_offset(CMsgHdr, "cmsg_type"), ctypes.c_int),
    ],
)
# Control messages are aligned like size_t (CMSG_ALIGN in <sys/socket.h>).
_ALIGN = ctypes.alignment(ctypes.c_size_t)


def _cmsg_align(size: int) -> int:
    return (size + _ALIGN - 1) & ~(_ALIGN - 1)


_CMSG_DATA = _cmsg_align(ctypes.sizeof(CMsgHdr))
_INT = struct.Struct("@i")
_IN_PKTINFO = _reader(InPktinfo, [(_offset(InPktinfo, "ipi_ifindex"), ctypes.c_int)])
_IN6_PKTINFO = _reader(In6Pktinfo, [(_offset(In6Pktinfo, "ipi6_ifindex"), ctypes.c_uint)])
_IN6_ADDR = _offset(In6Pktinfo, "ipi6_addr")
_IN_ADDR = _offset(InPktinfo, "ipi_addr")
_SIN_PORT = _offset(SockaddrIn, "sin_port")
_SIN_ADDR = _offset(SockaddrIn, "sin_addr")
_SIN6_PORT = _offset(SockaddrIn6, "sin6_port")
_SIN6_FLOW = _offset(SockaddrIn6, "sin6_flowinfo")
_SIN6_ADDR = _offset(SockaddrIn6, "sin6_addr")
_SIN6_SCOPE = _reader(SockaddrIn6, [(_offset(SockaddrIn6, "sin6_scope_id"), ctypes.c_uint32)])
_BE16 = struct.Struct("!H")
_BE32 = struct.Struct("!I")

#: Room per message for every control message a receive socket asks for (pktinfo,
#: TTL or hop limit, the drop counter), with slack for one the kernel adds later.
CONTROL_ROOM = _cmsg_align(
    _CMSG_DATA + ctypes.sizeof(In6Pktinfo) + 2 * (_CMSG_DATA + _cmsg_align(4)) + 64
)
#: Per-message payload room: the largest UDP payload plus one, so MSG_TRUNC still
#: tells an oversize datagram apart. Untouched pages of it cost no memory.
SLOT = _net.RECV_BUFSIZE
#: Messages per recvmmsg call. The buffers' resident size grows with the largest
#: datagrams read, at most ``BATCH * SLOT`` (2 MiB) per endpoint.
BATCH = 32


class Control:
    """What the control messages of one datagram say."""

    __slots__ = ("destination", "drops", "ifindex", "ttl")

    def __init__(self) -> None:
        self.ifindex = -1
        #: The packed destination address (from IP_PKTINFO / IPV6_PKTINFO).
        self.destination: bytes | None = None
        self.ttl: int | None = None
        #: The socket's running count of datagrams the kernel dropped (SO_RXQ_OVFL).
        self.drops: int | None = None


def _cmsgs(block: bytes, start: int) -> Iterator[tuple[int, int, int, int, int]]:
    """(offset, space, level, type, data length) of each control message from ``start``."""
    offset, end = start, len(block)
    while offset + _CMSG.size <= end:
        length, level, kind = _CMSG.unpack_from(block, offset)
        if length < _CMSG_DATA or offset + length > end:
            return  # a truncated message (MSG_CTRUNC): nothing more is whole
        space = _cmsg_align(length)
        yield offset, space, level, kind, length - _CMSG_DATA
        offset += space


def parse_control(block: bytes, start: int = 0) -> Control:
    """Every control message of ``block[start:]``; unknown levels and types are skipped."""
    info = Control()
    for offset, _space, level, kind, size in _cmsgs(block, start):
        data = offset + _CMSG_DATA
        if level == socket.IPPROTO_IP:
            if kind == _net.IP_PKTINFO and size >= _IN_PKTINFO.size:
                info.ifindex = _IN_PKTINFO.unpack_from(block, data)[0]
                info.destination = block[data + _IN_ADDR : data + _IN_ADDR + 4]
            elif kind == _net.IP_TTL and size >= _INT.size:
                info.ttl = _INT.unpack_from(block, data)[0]
        elif level == socket.IPPROTO_IPV6:
            if kind == _net.IPV6_PKTINFO and size >= _IN6_PKTINFO.size:
                info.ifindex = _IN6_PKTINFO.unpack_from(block, data)[0]
                info.destination = block[data + _IN6_ADDR : data + _IN6_ADDR + 16]
            elif kind == _net.IPV6_HOPLIMIT and size >= _INT.size:
                info.ttl = _INT.unpack_from(block, data)[0]
        elif level == socket.SOL_SOCKET and kind == SO_RXQ_OVFL and size >= 4:
            info.drops = struct.unpack_from("@I", block, data)[0]
    return info


def split_drops(block: bytes, start: int) -> tuple[int | None, bytes]:
    """The SO_RXQ_OVFL count in ``block[start:]`` and ``block`` without that message.

    The count changes with every drop, while the rest (source, pktinfo, TTL) repeats
    datagram after datagram: without it the block is worth remembering.
    """
    for offset, space, level, kind, size in _cmsgs(block, start):
        if level == socket.SOL_SOCKET and kind == SO_RXQ_OVFL and size >= 4:
            drops: int = struct.unpack_from("@I", block, offset + _CMSG_DATA)[0]
            return drops, block[:offset] + block[offset + space :]
    return None, block


def parse_sockaddr(raw: bytes, family: int) -> tuple[str, int] | tuple[str, int, int, int]:
    """The address tuple ``socket.recvmsg`` would give for a ``sockaddr_in``/``_in6``."""
    if family == socket.AF_INET:
        host = socket.inet_ntop(socket.AF_INET, raw[_SIN_ADDR : _SIN_ADDR + 4])
        return host, _BE16.unpack_from(raw, _SIN_PORT)[0]
    host = socket.inet_ntop(socket.AF_INET6, raw[_SIN6_ADDR : _SIN6_ADDR + 16])
    port = _BE16.unpack_from(raw, _SIN6_PORT)[0]
    flow = _BE32.unpack_from(raw, _SIN6_FLOW)[0]
    return host, port, flow, _SIN6_SCOPE.unpack_from(raw)[0]


def _recvmmsg() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    try:
        # The process's own symbols: libc is always loaded, whatever its file is called.
        func = ctypes.CDLL(None, use_errno=True).recvmmsg
    except (OSError, AttributeError):
        return None
    func.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p)
    func.restype = ctypes.c_int
    return func


_RECVMMSG = _recvmmsg()


def available() -> bool:
    """Whether this libc offers ``recvmmsg`` (Linux 2.6.33+, glibc 2.12+ or musl)."""
    return _RECVMMSG is not None


class Buffers:
    """Fixed buffers for ``BATCH`` datagrams of one address family, reused for every read.

    Per message: the source address and the control messages side by side (so one
    slice of both is the key under which their meaning is remembered), and a
    page-aligned payload slot. All of it lives in one anonymous mapping, so pages
    the kernel never writes to are never resident.
    """

    def __init__(self, family: int) -> None:
        if _RECVMMSG is None:
            raise OSError(errno.ENOSYS, "this libc has no recvmmsg")
        self.family = family
        self._call = _RECVMMSG
        name_size = ctypes.sizeof(SockaddrIn if family == socket.AF_INET else SockaddrIn6)
        #: Bytes of source address ahead of each message's control messages.
        self.name_room = _cmsg_align(name_size)
        meta = self.name_room + CONTROL_ROOM
        data_start = -(-BATCH * meta // mmap.PAGESIZE) * mmap.PAGESIZE
        #: The mapping every message is read into; slices of it are bytes.
        # Private: a forked child must not read into its parent's buffers.
        self.memory = mmap.mmap(-1, data_start + BATCH * SLOT, flags=mmap.MAP_PRIVATE)
        base = ctypes.addressof(ctypes.c_char.from_buffer(self.memory))
        self._iovecs = (IoVec * BATCH)()
        headers = (MMsgHdr * BATCH)()
        for i in range(BATCH):
            self._iovecs[i].iov_base = base + data_start + i * SLOT
            self._iovecs[i].iov_len = SLOT
            hdr = headers[i].msg_hdr
            hdr.msg_name = base + i * meta
            hdr.msg_namelen = name_size
            hdr.msg_iov = ctypes.addressof(self._iovecs[i])
            hdr.msg_iovlen = 1
            hdr.msg_control = base + i * meta + self.name_room
            hdr.msg_controllen = CONTROL_ROOM
        self._headers = headers
        # The kernel overwrites the lengths it is given; one copy restores them all.
        self._pristine = bytes(headers)
        self._address = ctypes.addressof(headers)
        self._results = memoryview(headers).cast("B")
        #: (key offset, payload offset) of each message in :attr:`memory`.
        self.slots = [(i * meta, data_start + i * SLOT) for i in range(BATCH)]

    def receive(self, fd: int) -> int:
        """Read up to ``BATCH`` datagrams; 0 when none is waiting, OSError on a failure."""
        ctypes.memmove(self._address, self._pristine, len(self._pristine))
        count: int = self._call(fd, self._address, BATCH, _MSG_DONTWAIT, None)
        if count < 0:
            err = ctypes.get_errno()
            if err in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                return 0
            raise OSError(err, os.strerror(err))
        return count

    def results(self, count: int) -> Iterator[tuple[int, int, int]]:
        """(msg_controllen, msg_flags, msg_len) of each of the ``count`` datagrams read."""
        return RESULT.iter_unpack(self._results[: count * RESULT.size])
