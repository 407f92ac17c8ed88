"""Pure text helpers for the command line: addresses, counts, payload views.

No sockets, no asyncio; everything here takes values and returns strings.
Output is meant for an 80-column terminal.
"""

from __future__ import annotations

import base64
import datetime
import json
from collections.abc import Sequence

from .._model import Datagram, Group, parse_group

__all__ = [
    "LISTEN_HEADER",
    "WIDTH",
    "datagram_json",
    "datagram_line",
    "hexdump",
    "host_port",
    "parse_group_port",
    "plural",
    "preview",
    "source_text",
]

WIDTH = 80


def plural(n: int, word: str, words: str | None = None) -> str:
    """``1 byte``, ``2 bytes``: the count and the word that agrees with it."""
    return f"{n} {word if n == 1 else (words or word + 's')}"


def host_port(host: str, port: int) -> str:
    """``10.0.0.1:5000``, or ``[ff02::fb]:5353``: IPv6 in brackets, as in URLs."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def source_text(source: Sequence[object]) -> str:
    return host_port(str(source[0]), int(str(source[1])))


def parse_group_port(text: str) -> tuple[Group, int]:
    """``239.1.2.3:5000`` or ``[ff02::fb]:5353`` -> (group, port); ValueError otherwise."""
    host, sep, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{text!r}: write IPv6 groups in brackets, e.g. '[ff02::fb]:5353'")
    if not sep or not host:
        raise ValueError(f"{text!r}: expected GROUP:PORT, e.g. '239.255.0.1:5000'")
    if "%" in host:
        # ping6 habit (ff02::1%eth0); mcastio selects interfaces with an option.
        zone = host.partition("%")[2]
        raise ValueError(
            f"{text!r}: choose the interface with --interface {zone} (-i {zone}), not %{zone}"
        )
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"{text!r}: port {port_text!r} is not a number") from None
    if not 1 <= port <= 65535:
        raise ValueError(f"{text!r}: port must be from 1 to 65535")
    return parse_group(host), port


def preview(data: bytes, width: int) -> str:
    """Printable ASCII as is, anything else as '.', cut to ``width`` with '~'."""
    text = "".join(chr(b) if 32 <= b < 127 else "." for b in data[: width + 1])
    return text if len(text) <= width else text[: max(width - 1, 0)] + "~"


def hexdump(data: bytes, indent: str = "    ") -> list[str]:
    """tcpdump -X style lines: offset, 16 bytes in hex, the same as ASCII."""
    lines = []
    for offset in range(0, len(data), 16):
        chunk = data[offset : offset + 16]
        hexed = " ".join(f"{b:02x}" for b in chunk)
        lines.append(f"{indent}{offset:04x}  {hexed:<47}  {preview(chunk, 16)}")
    return lines


#: Column labels over the lines of :func:`datagram_line`.
LISTEN_HEADER = f"{'TIME':<12} {'IF':<8} {'SOURCE':<21} {'GROUP':<15} {'TTL':>3} {'LEN':>5} DATA"


def datagram_line(
    dgram: Datagram, when: datetime.datetime, ttl: int | None = None, seq: int | None = None
) -> str:
    """One line per datagram under :data:`LISTEN_HEADER`; long IPv6 wraps the data."""
    head = (
        f"{when:%H:%M:%S.%f}"[:12]
        # A reply (unicast to a transmit socket) has no group.
        + f" {dgram.interface:<8} {source_text(dgram.source):<21} {dgram.group or 'reply':<15}"
        + f" {'-' if ttl is None else ttl:>3} {len(dgram.data):>5} "
    )
    data = dgram.data
    tag = ""
    if seq is not None:
        # The sequence header is binary; the number is what a person wants to see.
        tag = f"#{seq} "
        from .seqheader import HEADER_SIZE

        data = data[HEADER_SIZE:]
    if len(head) + 8 <= WIDTH:
        return head + tag + preview(data, WIDTH - len(head) - len(tag))
    # Long IPv6 addresses: unpadded fields, the data on an indented line of its own,
    # and the group on the second line too if the first would still be too long.
    fields = head.split()
    data_line = "    " + tag + preview(data, WIDTH - 4 - len(tag))
    if len(" ".join(fields)) <= WIDTH:
        return " ".join(fields) + "\n" + data_line
    return " ".join(fields[:3]) + "\n    " + " ".join(fields[3:]) + "\n" + data_line


def datagram_json(
    dgram: Datagram, when: datetime.datetime, ttl: int | None = None, seq: int | None = None
) -> str:
    obj: dict[str, object] = {
        "time": when.isoformat(),
        "interface": dgram.interface,
        "source": source_text(dgram.source),
        "group": dgram.group,
        "length": len(dgram.data),
        "data": base64.b64encode(dgram.data).decode("ascii"),
        "ttl": ttl,
    }
    if seq is not None:
        obj["seq"] = seq
    return json.dumps(obj)
