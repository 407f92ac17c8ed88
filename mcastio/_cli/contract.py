"""The one output contract every ``mcastio`` subcommand keeps.

- exit 0: it ran and what was asked for happened;
- exit 1: it ran but failed (nothing arrived with ``--fail-empty``, a peer never
  answered, a send failed, the kernel refused something);
- exit 2: the command line was wrong (bad option, value, address or interface
  name); nothing was sent or joined;
- every message of its own on stderr starts with ``mcastio: `` (warnings with
  ``mcastio: warning: ``), whatever the subcommand;
- options and operands may come in any order, ``-v`` included;
- lines fit in 80 columns.

docs/cli.md documents this once; tests/test_cli_contract.py checks it for every
subcommand.
"""

from __future__ import annotations

import sys
import textwrap
from typing import TextIO

__all__ = ["FAILED", "OK", "PREFIX", "USAGE", "WIDTH", "failed", "say", "usage", "wrap"]

WIDTH = 80

OK, FAILED, USAGE = 0, 1, 2
PREFIX = "mcastio: "


def say(message: str, stream: TextIO | None = None) -> None:
    """``mcastio: message`` on stderr; continuation lines indented under it."""
    print(wrap(PREFIX, message), file=stream or sys.stderr, flush=True)


def wrap(prefix: str, message: str) -> str:
    """``prefix`` + ``message`` in lines of at most 80 columns, the rest indented."""
    lines: list[str] = []
    for n, line in enumerate(message.splitlines() or [""]):
        first = prefix if n == 0 else "  "
        lines += textwrap.wrap(
            line.strip(),
            WIDTH,
            initial_indent=first,
            subsequent_indent="  ",
            break_on_hyphens=False,
            break_long_words=False,
        ) or [first.rstrip()]
    return "\n".join(lines)


def usage(message: str) -> int:
    """Report a mistake on the command line; the exit status for it."""
    say(message)
    return USAGE


def failed(message: str) -> int:
    """Report that the command ran but failed; the exit status for it."""
    say(message)
    return FAILED
