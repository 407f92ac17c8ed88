"""Pure text helpers for the command line: addresses, counts, payload views.

No sockets, no asyncio; everything here takes values and returns strings.
Output is meant for an 80-column terminal.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import socket
from collections.abc import Sequence

from .._model import Datagram, Group, parse_group

__all__ = [
    "LISTEN_HEADER",
    "WIDTH",
    "datagram_json",
    "datagram_line",
    "destination",
    "hexdump",
    "host_port",
    "listen_header",
    "parse_group_port",
    "parse_targets",
    "payload_text",
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


#: The most groups one range may name (each is an endpoint with sockets of its own).
MAX_RANGE = 256


def parse_targets(text: str) -> list[tuple[Group, int]]:
    """``GROUP:PORT``, or a range as mcjoin joins them: ``239.1.1.1-239.1.1.20:5000``
    or ``239.1.1.1-20:5000`` (the last part only), ``[ff05::1-ff05::10]:5000``."""
    host, sep, port_text = text.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    inner = host[1:-1] if bracketed else host
    if not sep or "-" not in inner:
        return [parse_group_port(text)]
    first_text, _, last_text = inner.partition("-")
    wrap = (lambda h: f"[{h}]") if bracketed else (lambda h: h)
    first, port = parse_group_port(f"{wrap(first_text)}:{port_text}")
    if "." not in last_text and ":" not in last_text:
        # Only the last part: 239.1.1.1-20, ff05::1-10 (hex, as IPv6 is written).
        cut = first_text.rfind("." if first.family == socket.AF_INET else ":")
        last_text = first_text[: cut + 1] + last_text
    try:
        last = parse_group(last_text)
    except ValueError as exc:
        raise ValueError(f"{text!r}: the range's end: {exc}") from None
    low, high = int(first.address), int(last.address)
    if last.family != first.family or high < low:
        raise ValueError(f"{text!r}: a range goes from a lower to a higher group of one family")
    if high - low + 1 > MAX_RANGE:
        raise ValueError(f"{text!r}: {high - low + 1} groups; a range may have at most {MAX_RANGE}")
    v4 = first.family == socket.AF_INET
    make = ipaddress.IPv4Address if v4 else ipaddress.IPv6Address
    return [(parse_group(str(make(n))), port) for n in range(low, high + 1)]


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


#: Width of the SOURCE column: an IPv4 address with its port, most of the time.
SOURCE_WIDTH = 17


def listen_header(dest_width: int = 15, ports: bool = False) -> str:
    """Column labels over the lines of :func:`datagram_line`."""
    dest = "GROUP:PORT" if ports else "GROUP"
    return (
        f"{'TIME':<12} {'IF':<8} {'SOURCE':<{SOURCE_WIDTH}} {dest:<{dest_width}} "
        f"{'TTL':>3} {'LEN':>5} DATA"
    )


#: The header of lines without ports (see :func:`listen_header`).
LISTEN_HEADER = listen_header()


def destination(dgram: Datagram, port: int | None) -> str:
    """``239.1.2.3:5000``: the group and port it was sent to; ``reply`` for a unicast answer."""
    if dgram.group is None:
        return "reply"  # a unicast answer to one of our transmit sockets
    return dgram.group if port is None else host_port(dgram.group, port)


def datagram_line(
    dgram: Datagram,
    when: datetime.datetime,
    ttl: int | None = None,
    seq: int | None = None,
    port: int | None = None,
    dest_width: int = 15,
) -> str:
    """One line per datagram under :func:`listen_header`; long IPv6 wraps the data.

    With ``port`` the destination column shows GROUP:PORT: two groups on two
    ports, or one group on two ports, are told apart.
    """
    head = (
        f"{when:%H:%M:%S.%f}"[:12]
        + f" {dgram.interface:<8} {source_text(dgram.source):<{SOURCE_WIDTH}}"
        + f" {destination(dgram, port):<{dest_width}}"
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


def payload_text(data: bytes, indent: str = "    ") -> list[str]:
    """The whole payload as text lines (``listen --text``), each within 80 columns.

    UTF-8 where it decodes (anything else as U+FFFD), control characters but tab
    as '.', its own line breaks kept, long lines wrapped.
    """
    width = WIDTH - len(indent)
    lines = []
    for line in data.decode("utf-8", "replace").splitlines() or [""]:
        shown = "".join(c if c.isprintable() or c == "\t" else "." for c in line)
        shown = shown.expandtabs(4)
        lines += [indent + shown[i : i + width] for i in range(0, max(len(shown), 1), width)]
    return lines


def datagram_json(
    dgram: Datagram,
    when: datetime.datetime,
    ttl: int | None = None,
    seq: int | None = None,
    port: int | None = None,
) -> str:
    obj: dict[str, object] = {
        "time": when.isoformat(),
        "interface": dgram.interface,
        "source": source_text(dgram.source),
        "group": dgram.group,
        "port": port,
        "length": len(dgram.data),
        "data": base64.b64encode(dgram.data).decode("ascii"),
        "ttl": ttl,
    }
    if seq is not None:
        obj["seq"] = seq
    return json.dumps(obj)
