"""What doctor sees of the keepers in one event loop: one beacon naming their groups.

A beacon is an abstract unix socket whose name says what runs
(:func:`._keeper.beacon_name`); doctor lists them from /proc/net/unix. One per
keeper cost a descriptor per group: 100 endpoints of one group each held 100
beacons, a third of their descriptor budget. So every keeper of a loop shares one,
named for the groups kept, as many as fit an abstract name, and how many more
(:func:`beacon_detail`). The name changes with the groups: the socket is re-bound
at once (a start is seen by a doctor run right after it), about 15 µs each.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections import Counter
from collections.abc import Iterable

from ._errors import MulticastError
from ._keeper import beacon_name
from ._perloop import PerLoop

__all__ = ["Beacon", "beacon_detail", "beacon_groups", "keepalive_beacon"]

_log = logging.getLogger("mcastio")

# An abstract name has 107 bytes; "mcastio/keepalive/", "/" and "pid.serial" take
# at most 34 of them, so the groups get the rest, with room for "+N".
_DETAIL_BYTES = 64


def beacon_detail(groups: Iterable[str]) -> str:
    """``"239.1.1.1,ff02::fb+98"``: the groups kept, in order, as many as fit, and how many more."""
    ordered = sorted(groups)
    shown: list[str] = []
    for i, group in enumerate(ordered):
        more = len(ordered) - i - 1
        tail = f"+{more}" if more else ""
        if len(",".join([*shown, group]) + tail) > _DETAIL_BYTES:
            break
        shown.append(group)
    rest = len(ordered) - len(shown)
    return ",".join(shown) + (f"+{rest}" if rest else "")


def beacon_groups(detail: str) -> tuple[tuple[str, ...], int]:
    """The groups a beacon's detail names, and how many more it kept unnamed."""
    names, _, more = detail.partition("+")
    return tuple(n for n in names.split(",") if n), int(more) if more.isdigit() else 0


class Beacon:
    """The keepers' beacon of one loop: held while any group is kept."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # Per loop only so that it goes with its loop; it holds no reference to it.
        del loop
        self._groups: Counter[str] = Counter()
        self._sock: socket.socket | None = None
        self._serial = 0

    @property
    def name(self) -> str | None:
        """The name bound now (without the leading NUL), or None."""
        if self._sock is None:
            return None
        raw = self._sock.getsockname()
        return raw.lstrip("\0") if isinstance(raw, str) else raw.lstrip(b"\0").decode()

    def add(self, group: str) -> None:
        self._groups[group] += 1
        if self._groups[group] == 1:
            self.rename()

    def remove(self, group: str) -> None:
        if self._groups[group] <= 0:
            return
        self._groups[group] -= 1
        if self._groups[group] == 0:
            del self._groups[group]
            self.rename()

    def rename(self) -> None:
        """Bind a socket named for the groups kept now (none: no socket)."""
        old, self._sock = self._sock, None
        if old is not None:
            old.close()
        if not self._groups:
            return
        self._serial += 1
        name = beacon_name("keepalive", beacon_detail(self._groups), os.getpid(), self._serial)
        # Linux-only, imported where used: doctor reads beacon_groups on any platform.
        from ._platform.linux import rawnet as _rawnet

        try:
            self._sock = _rawnet.open_beacon(name)
        except MulticastError as exc:
            # Doctor then says no keeper runs here: a lesser harm than failing a start.
            _log.debug("no keepalive beacon for doctor: %s", exc)

    def close(self) -> None:
        """Drop every group and the socket. Idempotent."""
        self._groups.clear()
        if self._sock is not None:
            self._sock.close()
            self._sock = None


keepalive_beacon: PerLoop[Beacon] = PerLoop(Beacon)
