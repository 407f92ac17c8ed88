"""``listen --pcap``: the datagrams received, as a pcapng file for tcpdump and Wireshark.

listen reads datagrams from UDP sockets, not frames from the wire, so each
packet's Ethernet, IP and UDP headers are rebuilt from what the socket reported: source
address and port, the group and port, the TTL or hop limit, the payload. The
IPv4 header checksum and the IPv6 UDP checksum are computed (IPv4's UDP
checksum is 0, "not computed", which RFC 768 allows); IP ids, flags and the
TOS byte are 0. Each interface gets an Interface Description Block with its
name, so Wireshark's "Interface" column (and its frame details) show
where every datagram arrived. Timestamps are in nanoseconds.

Pure packing functions plus a small writer; the layout is pcapng
(draft-ietf-opsawg-pcapng), little-endian.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from types import TracebackType
from typing import BinaryIO

from .._model import Datagram

__all__ = ["LINKTYPE_ETHERNET", "PcapWriter", "interface_block", "ip_packet", "section_header"]

#: Ethernet. Raw IP (101) would fit better, but libpcap (1.10) refuses a second
#: Interface Description Block of that type ("different from the type of the
#: first interface": it compares the DLT of one with the LINKTYPE of the other),
#: so each packet gets an Ethernet header: the group's multicast MAC as the
#: destination, 00:00:00:00:00:00 as the source (the socket does not say).
LINKTYPE_ETHERNET = 1
_SNAPLEN = 0  # no limit
_OPT_END, _IF_NAME, _IF_TSRESOL, _SHB_USERAPPL = 0, 2, 9, 4


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + _pad(value)


def _block(block_type: int, body: bytes) -> bytes:
    length = 12 + len(body)
    return struct.pack("<II", block_type, length) + body + struct.pack("<I", length)


def section_header(application: str = "mcastio listen") -> bytes:
    options = _option(_SHB_USERAPPL, application.encode()) + _option(_OPT_END, b"")
    return _block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1) + options)


def interface_block(name: str) -> bytes:
    options = (
        _option(_IF_NAME, name.encode())
        + _option(_IF_TSRESOL, bytes([9]))  # 10^-9 s: nanoseconds
        + _option(_OPT_END, b"")
    )
    return _block(1, struct.pack("<HHI", LINKTYPE_ETHERNET, 0, _SNAPLEN) + options)


def _packet_block(interface_id: int, when_ns: int, packet: bytes) -> bytes:
    head = struct.pack(
        "<IIIII", interface_id, when_ns >> 32, when_ns & 0xFFFFFFFF, len(packet), len(packet)
    )
    return _block(6, head + _pad(packet))


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ethernet_frame(packet: bytes) -> bytes:
    """``packet`` (IPv4 or IPv6, to a group) behind an Ethernet header (RFC 1112, RFC 2464)."""
    if packet[0] >> 4 == 4:
        dst = b"\x01\x00\x5e" + bytes([packet[17] & 0x7F]) + packet[18:20]
        ethertype = 0x0800
    else:
        dst = b"\x33\x33" + packet[36:40]
        ethertype = 0x86DD
    return dst + bytes(6) + struct.pack("!H", ethertype) + packet


def ip_packet(source: str, sport: int, group: str, dport: int, ttl: int, payload: bytes) -> bytes:
    """An IPv4 or IPv6 packet carrying ``payload`` in UDP, as it was on the wire."""
    src = ipaddress.ip_address(source.partition("%")[0])
    dst = ipaddress.ip_address(group)
    udp_len = 8 + len(payload)
    if src.version == 4:
        udp = struct.pack("!HHHH", sport, dport, udp_len, 0) + payload
        header = struct.pack(
            "!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, 0, 0, ttl, socket.IPPROTO_UDP, 0,
            src.packed, dst.packed,
        )  # fmt: skip
        header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
        return header + udp
    pseudo = src.packed + dst.packed + struct.pack("!I3xB", udp_len, socket.IPPROTO_UDP)
    udp = struct.pack("!HHHH", sport, dport, udp_len, 0) + payload
    checksum = _checksum(pseudo + udp) or 0xFFFF  # 0 means "none", not allowed in IPv6
    udp = udp[:6] + struct.pack("!H", checksum) + udp[8:]
    header = struct.pack("!IHBB", 6 << 28, udp_len, socket.IPPROTO_UDP, ttl)
    return header + src.packed + dst.packed + udp


class PcapWriter:
    """Appends each datagram to a pcapng file, naming its interface."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._ids: dict[str, int] = {}
        stream.write(section_header())

    @classmethod
    def open(cls, path: str) -> PcapWriter:
        """ValueError (a usage mistake) when ``path`` cannot be written."""
        try:
            stream = open(path, "wb")  # noqa: SIM115 (closed by close())
        except OSError as exc:
            raise ValueError(f"cannot write {path}: {exc.strerror or exc}") from None
        return cls(stream)

    def write(self, dgram: Datagram, port: int, when_ns: int) -> None:
        if dgram.group is None:
            return  # a unicast reply: not a group datagram
        interface_id = self._ids.get(dgram.interface)
        if interface_id is None:
            interface_id = self._ids[dgram.interface] = len(self._ids)
            self._stream.write(interface_block(dgram.interface))
        packet = ip_packet(
            str(dgram.source[0]), int(dgram.source[1]), dgram.group, port,
            0 if dgram.ttl is None else dgram.ttl, dgram.data,
        )  # fmt: skip
        self._stream.write(_packet_block(interface_id, when_ns, ethernet_frame(packet)))
        self._stream.flush()

    def close(self) -> None:
        self._stream.close()

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
