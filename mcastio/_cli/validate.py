"""argparse ``type=`` functions that reject bad values with a message a person can act on."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

__all__ = ["count", "hex_bytes", "non_negative_seconds", "positive_rate", "seconds", "size", "ttl"]


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
