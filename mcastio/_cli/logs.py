"""Log records from the library, shown to a person at a terminal.

The library logs in API words ("the interfaces= selector"); on the command
line these become the option a person typed, and each record is one
``mcastio: warning: ...`` message on stderr instead of the bare text Python's
last-resort handler prints.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

__all__ = ["cli_words", "setup_logging"]

#: Library phrases and what a command-line user knows them as.
_WORDS = (
    ("which the interfaces= selector leaves out", "not named with --interface"),
    ("source_address", "--source"),
    ("source_port", "--source-port"),
    ("excluded by the interfaces= selector", "not named with --interface"),
    ("(an interfaces= selector was given)", "(--interface was given)"),
    ("interfaces= selector", "--interface"),
    ("sources=", "--source"),
    ("ttl must be", "--ttl must be"),
)

#: Lines that describe what the library will do next, which the command line does
#: not do: listen and send exit instead of waiting for an interface.
_DROP_LINES = ("waiting for an interface to become usable",)


def cli_words(text: str) -> str:
    """``text`` in command-line words, without lines that do not apply to it."""
    for api, cli in _WORDS:
        text = text.replace(api, cli)
    lines = [ln for ln in text.splitlines() if ln.strip() not in _DROP_LINES]
    return "\n".join(lines)


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = cli_words(record.getMessage())
        from .contract import PREFIX, wrap

        return wrap(f"{PREFIX}{record.levelname.lower()}: ", text)


class _Handler(logging.Handler):
    """Writes to the ``sys.stderr`` of the moment (tests swap it per call)."""

    def __init__(self, stream: TextIO | None) -> None:
        super().__init__()
        self._stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        if not cli_words(record.getMessage()).strip():
            return
        stream = self._stream or sys.stderr
        try:
            stream.write(self.format(record) + "\n")
            stream.flush()
        except (OSError, ValueError):
            self.handleError(record)


def setup_logging(verbose: bool = False, stream: TextIO | None = None) -> logging.Handler:
    """Route the ``mcastio`` logger to stderr for people; returns the handler.

    The caller removes it with ``logging.getLogger("mcastio").removeHandler``.
    """
    handler = _Handler(stream)
    handler.setFormatter(_Formatter())
    logger = logging.getLogger("mcastio")
    # One handler per run: main() may be called many times in one process (tests).
    for old in [h for h in logger.handlers if isinstance(h, _Handler)]:
        logger.removeHandler(old)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if verbose else logging.WARNING)
    logger.propagate = False
    return handler
