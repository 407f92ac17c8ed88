"""The optional sequence and timestamp header of ``mcastio send --seq``.

``listen`` recognises it at the start of a payload and counts loss, duplicates,
reordering and one-way delay per sender. Layout (network byte order, 28 bytes)::

    0  magic "MCIO"      4  version (1)   5  flags (0)   6  header length (28)
    8  stream id (u32, random per send run, so a restarted sender is a new stream)
    12 sequence number (u64, from 0)    20 send time (u64, ns since the Unix epoch)

The send time is the sender's wall clock: the one-way delay is only as good as
the two hosts' clock sync (exact in a lab, where every namespace shares one clock).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = ["HEADER_SIZE", "MAGIC", "SeqHeader", "decode_header", "encode_header"]

MAGIC = b"MCIO"
VERSION = 1
_FORMAT = struct.Struct("!4sBBHIQQ")
HEADER_SIZE = _FORMAT.size


@dataclass(frozen=True, slots=True)
class SeqHeader:
    stream: int
    seq: int
    sent_ns: int


def encode_header(stream: int, seq: int, sent_ns: int) -> bytes:
    return _FORMAT.pack(MAGIC, VERSION, 0, HEADER_SIZE, stream, seq, sent_ns)


def decode_header(data: bytes) -> SeqHeader | None:
    """The header at the start of ``data``, or ``None`` when it has none."""
    if len(data) < HEADER_SIZE or data[:4] != MAGIC:
        return None
    _magic, version, _flags, length, stream, seq, sent_ns = _FORMAT.unpack_from(data)
    if version != VERSION or length != HEADER_SIZE:
        return None
    return SeqHeader(stream, seq, sent_ns)
