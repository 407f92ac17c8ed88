"""argparse ``type=`` functions that reject bad values with a message a person can act on."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

__all__ = [
    "DSCP_NAMES",
    "count",
    "dscp",
    "hex_bytes",
    "non_negative_seconds",
    "port",
    "positive_rate",
    "seconds",
    "size",
    "tos",
    "ttl",
]


def _number(text: str, kind: Callable[[str], float]) -> float:
    try:
        value = kind(text)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def count(text: str) -> int:
    """A count of at least 1 (``-c 0`` would mean "do nothing", which is never meant)."""
    value = int(_number(text, int))
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {text}")
    return value


def seconds(text: str) -> float:
    """A positive duration or interval in seconds."""
    value = _number(text, float)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, not {text}")
    return value


def non_negative_seconds(text: str) -> float:
    value = _number(text, float)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, not {text}")
    return value


def positive_rate(text: str) -> float:
    """Packets per second, more than 0."""
    value = _number(text, float)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 packets per second, not {text}")
    return value


def ttl(text: str) -> int:
    value = int(_number(text, int))
    if not 0 <= value <= 255:
        raise argparse.ArgumentTypeError(f"must be from 0 to 255, not {text}")
    return value


#: The largest UDP payload over IPv4 (65535 - 20 IP - 8 UDP).
MAX_PAYLOAD = 65507


def size(text: str) -> int:
    """A payload size in bytes, from 0 to the largest UDP payload."""
    value = int(_number(text, int))
    if not 0 <= value <= MAX_PAYLOAD:
        raise argparse.ArgumentTypeError(f"must be from 0 to {MAX_PAYLOAD} bytes, not {text}")
    return value


def hex_bytes(text: str) -> bytes:
    """``48 65 6c``, ``48656c`` or ``0x48656c`` -> bytes."""
    cleaned = "".join(text.split()).removeprefix("0x").replace(":", "")
    try:
        return bytes.fromhex(cleaned)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not hex bytes (pairs of 0-9/a-f, e.g. '48656c6c6f')"
        ) from None


def _byte_value(text: str) -> int:
    """A whole number, decimal or ``0x`` hex (TOS values are often written ``0xb8``)."""
    try:
        return int(text, 16) if text.lower().lstrip("+-").startswith("0x") else int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def tos(text: str) -> int:
    """The IPv4 TOS / IPv6 traffic class byte: 0-255, decimal or hex."""
    value = _byte_value(text)
    if not 0 <= value <= 255:
        raise argparse.ArgumentTypeError(f"must be from 0 to 255 (or 0x00 to 0xff), not {text}")
    return value


#: DSCP names (RFC 2474 class selectors and default forwarding, RFC 2597 AF,
#: RFC 3246 EF, RFC 5865 VA, RFC 8622 LE) and their code points, as iptables names them.
DSCP_NAMES = {
    "BE": 0,
    "DF": 0,
    **{f"CS{n}": 8 * n for n in range(8)},
    **{f"AF{c}{d}": 8 * c + 2 * d for c in range(1, 5) for d in range(1, 4)},
    "EF": 46,
    "VA": 44,
    "LE": 1,
}


def dscp(text: str) -> int:
    """A DSCP (0-63, or a name such as EF or AF41), as the TOS byte it makes (DSCP << 2)."""
    named = DSCP_NAMES.get(text.strip().upper())
    if named is not None:
        return named << 2
    try:
        value = _byte_value(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a DSCP: a number from 0 to 63 or a name (EF, AF11-AF43, "
            "CS0-CS7, BE, VA, LE)"
        ) from None
    if not 0 <= value <= 63:
        raise argparse.ArgumentTypeError(f"must be from 0 to 63 (6 bits), not {text}")
    return value << 2


def port(text: str) -> int:
    value = int(_number(text, int))
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port from 1 to 65535, not {text}")
    return value
