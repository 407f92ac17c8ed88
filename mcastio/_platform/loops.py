"""Whether an event loop can watch sockets, asked once per loop before an endpoint starts.

mcastio reads its sockets with ``loop.add_reader``. asyncio's default loop on
Windows, ``ProactorEventLoop``, has none: ``add_reader`` raises
``NotImplementedError`` there (asyncio's ``AbstractEventLoop``; "add_reader() and
add_writer() are not supported" on the Proactor loop, in CPython's "Platform
Support" page, docs.python.org/3/library/asyncio-platforms.html). Found deep inside
a start, that would surface as a bare ``NotImplementedError`` from a reader; asked
here first, it is a :class:`MulticastError` that says what to use instead.
"""

from __future__ import annotations

import asyncio
import socket

from .._errors import MulticastError
from .._perloop import PerLoop

__all__ = ["require_readers"]


def _probe(loop: asyncio.AbstractEventLoop) -> str:
    """ "" when ``loop`` takes readers; else why not (the error's text)."""
    # A socket of our own: add_reader needs a descriptor, and the loop may refuse
    # (Proactor) or accept it; either way nothing else is watched or touched.
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    except OSError as exc:
        # Out of descriptors, say: not cached (PerLoop keeps only what this returns).
        raise MulticastError(f"cannot open a socket to check the event loop: {exc}") from exc
    with sock:
        try:
            loop.add_reader(sock.fileno(), _nothing)
        except NotImplementedError:
            name = type(loop).__name__
            return (
                f"the event loop {name} cannot watch sockets (its add_reader() is not "
                "implemented): mcastio needs a selector loop; use asyncio.SelectorEventLoop: "
                "asyncio.run(main(), loop_factory=asyncio.SelectorEventLoop) on Python 3.12+, "
                "or on Windows asyncio.set_event_loop_policy("
                "asyncio.WindowsSelectorEventLoopPolicy()) before asyncio.run()"
            )
        loop.remove_reader(sock.fileno())
    return ""


def _nothing() -> None:
    return None


_verdicts: PerLoop[str] = PerLoop(_probe)


def require_readers(loop: asyncio.AbstractEventLoop) -> None:
    """Raise :class:`MulticastError` unless ``loop`` can watch sockets (``add_reader``)."""
    why = _verdicts(loop)
    if why:
        raise MulticastError(why)
