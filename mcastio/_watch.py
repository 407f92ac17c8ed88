"""Pure decisions of the interface watcher: no sockets, no asyncio, no host reads.

The watcher re-reads a snapshot whenever something may have changed; what to
join, leave and tell the application is decided here from values passed in.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from ._model import Group, Interface, InterfaceSelector, select_interfaces

__all__ = [
    "Backoff",
    "CarrierTracker",
    "InterfaceEvent",
    "desired_interfaces",
    "interface_events",
]

EventKind = Literal["added", "removed", "changed"]


@dataclass(frozen=True, slots=True)
class InterfaceEvent:
    """An interface this endpoint uses was added, removed or changed its addresses."""

    kind: EventKind
    name: str
    index: int
    #: The interface's addresses after the change (before it, for ``removed``):
    #: IPv4 first, then IPv6, as strings without prefix length.
    addresses: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.kind} {self.name} (index {self.index}): {', '.join(self.addresses) or '-'}"


# The address strings of recent Interface values, by identity (the value is kept, so
# its id is not reused while cached). Every endpoint of a loop re-plans from one
# snapshot: a storm of 2,000 addresses under 100 endpoints would otherwise format
# the same 2,000 addresses 200 times (4 s of a round).
_strings: dict[int, tuple[Interface, tuple[str, ...]]] = {}
_STRINGS_KEPT = 4096


def _addresses(iface: Interface) -> tuple[str, ...]:
    cached = _strings.get(id(iface))
    if cached is not None and cached[0] is iface:
        return cached[1]
    strings = iface.addresses(socket.AF_INET) + iface.addresses(socket.AF_INET6)
    if len(_strings) >= _STRINGS_KEPT:
        _strings.clear()
    _strings[id(iface)] = (iface, strings)
    return strings


def _same_addresses(old: Interface, new: Interface) -> bool:
    if old.ipv4 == new.ipv4 and old.ipv6 == new.ipv6:
        return True  # Without formatting a string: the common case.
    return _addresses(old) == _addresses(new)


def _event(kind: EventKind, iface: Interface) -> InterfaceEvent:
    return InterfaceEvent(kind, iface.name, iface.index, _addresses(iface))


def interface_events(
    before: Mapping[int, Interface], after: Mapping[int, Interface]
) -> tuple[InterfaceEvent, ...]:
    """What changed between two sets of used interfaces, keyed by index.

    Removals come first, so an interface re-created under the same name (a new
    index) reads as "removed eth1" then "added eth1".
    """
    events = [_event("removed", i) for idx, i in sorted(before.items()) if idx not in after]
    for idx, new in sorted(after.items()):
        old = before.get(idx)
        if old is None:
            events.append(_event("added", new))
        elif old.name != new.name or not _same_addresses(old, new):
            events.append(_event("changed", new))
    return tuple(events)


def desired_interfaces(
    snapshot: Sequence[Interface], group: Group, selector: InterfaceSelector
) -> tuple[Interface, ...]:
    """:func:`select_interfaces` for a running endpoint: a named interface that is
    missing is simply not wanted yet instead of an error."""
    return select_interfaces(snapshot, group, selector, missing_ok=True)


class Backoff:
    """Delays between retries of a failed reconcile: doubling, capped, reset on success."""

    __slots__ = ("_cap", "_first", "_next")

    def __init__(self, first: float = 0.25, cap: float = 10.0) -> None:
        if not 0 < first <= cap:
            raise ValueError(f"need 0 < first <= cap, not first={first!r}, cap={cap!r}")
        self._first = first
        self._cap = cap
        self._next = first

    def failed(self) -> float:
        """Seconds to wait before the next attempt."""
        delay = self._next
        self._next = min(self._next * 2, self._cap)
        return delay

    def succeeded(self) -> None:
        self._next = self._first


class CarrierTracker:
    """Remembers, per interface index, whether carrier was last seen up.

    Linux sends no membership reports when carrier returns, and a snooping switch
    has flushed the port's memberships when the link dropped; the endpoint has to
    re-announce on every interface whose carrier came back.
    """

    __slots__ = ("_up", "_ups")

    def __init__(self) -> None:
        self._up: dict[int, bool] = {}
        self._ups: dict[int, int] = {}

    def seed(self, snapshot: Iterable[Interface]) -> None:
        for iface in snapshot:
            self._up[iface.index] = iface.up and iface.running

    def update(
        self, index: int, carrier: bool, *, carrier_ups: int | None = None, deleted: bool = False
    ) -> bool:
        """Record one link notification; True when carrier came back since the last one.

        ``carrier_ups`` (the kernel's carrier-on counter) also catches a flap too
        short for any notification to show the link without carrier.
        """
        if deleted:
            self._up.pop(index, None)
            self._ups.pop(index, None)
            return False
        was = self._up.get(index)
        self._up[index] = carrier
        came_back = carrier and was is False
        if carrier_ups is not None:
            before = self._ups.get(index)
            self._ups[index] = carrier_ups
            came_back = came_back or (carrier and before is not None and carrier_ups > before)
        return came_back
