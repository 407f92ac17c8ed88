"""Socket address and RFC 3678 join structures, packed for another OS's layout.

CPython builds these structures for the OS it runs on; the per-OS modules need
them for a named OS, so its numbers can be checked on any machine. The layouts
differ in two ways only: BSD socket addresses start with a length byte
(``sin_len``), and ``group_req``/``group_source_req`` put the group at offset 4
(macOS, ``#pragma pack(4)``) or at the alignment of ``sockaddr_storage``.
"""

from __future__ import annotations

import ipaddress
import struct

__all__ = ["GroupLayout", "sockaddr"]

#: sizeof(struct sockaddr_storage): _SS_MAXSIZE 128 in xnu and FreeBSD
#: sys/socket.h, and in Windows ws2def.h (_SS_MAXSIZE 128).
SOCKADDR_STORAGE_SIZE = 128

_IN4 = struct.Struct("=2s4s8x")  # port (network order), address, sin_zero
_IN6 = struct.Struct("=2s4s16sI")  # port, flowinfo (network order), address, scope id


def sockaddr(
    family: int,
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
    port: int = 0,
    scope: int = 0,
    *,
    length_byte: bool,
) -> bytes:
    """``sockaddr_in`` or ``sockaddr_in6`` with the OS's family number.

    ``length_byte``: BSD layout (``u_char sin_len; u_char sin_family``), which
    the kernels check (FreeBSD's in_mcast.c refuses a join whose ``sin_len`` is
    wrong); otherwise a 16-bit family, as on Windows and Linux.
    """
    port_bytes = port.to_bytes(2, "big")
    if address.version == 4:
        body = _IN4.pack(port_bytes, address.packed)
    else:
        body = _IN6.pack(port_bytes, b"\0\0\0\0", address.packed, scope)
    if length_byte:
        return bytes((2 + len(body), family)) + body
    return struct.pack("=H", family) + body


class GroupLayout:
    """``struct group_req`` and ``struct group_source_req`` for one OS.

    ``offset`` is where ``gr_group`` starts: the interface index (a 32-bit
    integer) comes first, then padding up to the alignment of ``sockaddr_storage``.
    """

    def __init__(self, offset: int) -> None:
        pad = offset - 4
        self.offset = offset
        self.group_req = struct.Struct(f"=I{pad}x{SOCKADDR_STORAGE_SIZE}s")
        # No padding between the two storages: each is a multiple of its alignment.
        self.group_source_req = struct.Struct(
            f"=I{pad}x{SOCKADDR_STORAGE_SIZE}s{SOCKADDR_STORAGE_SIZE}s"
        )

    def pack_group(self, ifindex: int, group: bytes) -> bytes:
        """A ``group_req`` for MCAST_JOIN_GROUP: ``group`` is a packed sockaddr."""
        return self.group_req.pack(ifindex, group)

    def pack_source(self, ifindex: int, group: bytes, source: bytes) -> bytes:
        """A ``group_source_req`` for MCAST_JOIN_SOURCE_GROUP."""
        return self.group_source_req.pack(ifindex, group, source)
