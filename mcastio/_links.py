"""The interfaces an endpoint uses, kept whole: joined and able to send, or not used at all.

A plan from ``_model.plan_changes`` is carried out here, one interface at a time:
an interface that cannot get every group's membership and its transmit socket gets
none of them, so the endpoint never receives on a link it cannot send on, or the
reverse. Groups added at run time are joined on every interface in use, or on none.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Sequence

from ._errors import MulticastError
from ._groupset import GroupMemberships
from ._model import Group, Interface, Plan, plan_changes
from ._receive import ReceivePath
from ._transmit import TransmitPool
from ._watch import InterfaceEvent, interface_events

__all__ = ["Links"]

_log = logging.getLogger("mcastio")


class _GroupsText:
    """The groups of a log line, formatted when the line is: a start on a thousand
    links logs a line per link, mostly at a level nobody has enabled."""

    __slots__ = ("_memberships",)

    def __init__(self, memberships: GroupMemberships) -> None:
        self._memberships = memberships

    def __str__(self) -> str:
        groups = self._memberships.groups
        text = ", ".join(map(str, groups[:3])) + (
            f" (+{len(groups) - 3})" if len(groups) > 3 else ""
        )
        return text if self._memberships.joining else f"{text} (send-only)"


class Links:
    """The interfaces in use, with their memberships and transmit sockets."""

    def __init__(
        self,
        family: socket.AddressFamily,
        memberships: GroupMemberships,
        pool: TransmitPool,
        receive: ReceivePath,
    ) -> None:
        self._family = family
        self._memberships = memberships
        self._pool = pool
        self._receive = receive
        self._current: dict[int, Interface] = {}
        # index -> name of _current, kept with it: a start on a thousand links hands
        # the receive path a copy at every turn, and copying is cheap, rebuilding not.
        self._names_now: dict[int, str] = {}

    @property
    def interfaces(self) -> tuple[Interface, ...]:
        return tuple(iface for _, iface in sorted(self._current.items()))

    def __len__(self) -> int:
        return len(self._current)

    @property
    def _group(self) -> _GroupsText:
        """The groups, for log lines (formatted only for a line that is written)."""
        return _GroupsText(self._memberships)

    @property
    def groups(self) -> tuple[Group, ...]:
        return self._memberships.groups

    def add_group(self, group: Group) -> None:
        """Join ``group`` on every interface in use, or raise having joined it nowhere."""
        self._memberships.add(group, self.interfaces)
        self._groups_changed()
        if self._memberships.joining:
            _log.info("joined %s on %s", group, ", ".join(self._names()) or "no interface yet")

    def remove_group(self, group: Group) -> None:
        """Leave ``group`` on every interface; its datagrams are no longer delivered."""
        self._memberships.remove(group)
        self._groups_changed()
        if self._memberships.joining:
            _log.info("left %s on %s", group, ", ".join(self._names()) or "no interface")

    def _groups_changed(self) -> None:
        groups = self._memberships.groups
        self._receive.groups = groups
        self._pool.set_groups(groups)

    def _names(self) -> list[str]:
        return [iface.name for iface in self.interfaces]

    def reconcile(
        self, desired: Sequence[Interface], reannounce: frozenset[int] = frozenset()
    ) -> tuple[list[MulticastError], list[InterfaceEvent]]:
        """Bring the interfaces in line with ``desired``; (failures, changes seen)."""
        before = dict(self._current)
        plan = plan_changes(before, desired, self._family)
        failures = self.apply(plan) if plan else []
        fresh = {i.index for i in plan.add}
        for index in sorted(reannounce):
            if index in self._current and index not in fresh:
                try:
                    self._reannounce(self._current[index])
                except MulticastError as exc:
                    _log.warning("could not re-announce %s: %s", self._group, exc)
                    failures.append(exc)
        return failures, list(interface_events(before, self._current))

    def apply(self, plan: Plan, *, derive: bool = True) -> list[MulticastError]:
        """Carry out ``plan``, all-or-nothing per interface; return the failures.

        ``derive=False`` leaves the receive path's names to :meth:`derive_names`, to
        be called before the loop next runs (a start on a thousand links applies a
        thousand one-interface plans: deriving after each would be quadratic).
        """
        failures: list[MulticastError] = []
        for iface in plan.remove:
            self._drop(iface)
            verb = "left" if self._memberships.joining else "stopped sending"
            _log.info("%s %s on %s (index %d)", verb, self._group, iface.name, iface.index)
        for _old, new in plan.change:
            try:
                self._pool.replace(new)
            except MulticastError as exc:
                _log.warning("keeping the old transmit socket on %s: %s", new.name, exc)
                failures.append(exc)
                continue
            self._set(new)
            _log.info("updated %s (index %d) for %s", new.name, new.index, self._group)
        for iface in plan.refresh:
            try:
                self._pool.refresh(iface)
            except MulticastError as exc:  # A socket bound to an address now gone.
                _log.warning("keeping the old transmit socket on %s: %s", iface.name, exc)
                failures.append(exc)
                continue
            self._set(iface)
        for _old, iface in plan.change:
            # The interface changed: a link whose sends failed is tried again.
            self._pool.retry(iface.index)
        for iface in plan.refresh:
            self._pool.retry(iface.index)
        for iface in plan.add:
            try:
                self._add(iface)
            except MulticastError as exc:
                _log.warning("could not use %s for %s: %s", iface.name, self._group, exc)
                failures.append(exc)
            else:
                verb = "joined" if self._memberships.joining else "sending to"
                _log.info("%s %s on %s (index %d)", verb, self._group, iface.name, iface.index)
        if derive:
            self.derive_names()
        return failures

    def derive_names(self) -> None:
        # Derived, never patched: the receive path's index -> name lookup.
        self._receive.names = dict(self._names_now)

    def close(self) -> None:
        self._pool.close_all()
        self._memberships.close()
        self._current.clear()
        self._names_now.clear()
        self._receive.names = {}

    def _set(self, iface: Interface) -> None:
        self._current[iface.index] = iface
        self._names_now[iface.index] = iface.name

    def _add(self, iface: Interface) -> None:
        self._memberships.join(iface)
        try:
            self._pool.open(iface)
        except BaseException:
            # Receiving without being able to send would be half an interface.
            self._memberships.leave(iface)
            raise
        self._set(iface)

    def _drop(self, iface: Interface) -> None:
        del self._current[iface.index]
        del self._names_now[iface.index]
        self._pool.close(iface.index)
        self._memberships.leave(iface)

    def _reannounce(self, iface: Interface) -> None:
        """Make the host report its membership again, without a Leave (see Memberships).

        Linux does not report memberships again when carrier returns, while a
        snooping switch forgot them when the link dropped. A failure leaves the
        membership in place: the interface stays in use.
        """
        if not self._memberships.joining:
            return  # A send-only endpoint holds nothing to announce.
        hows = self._memberships.reannounce(iface)
        if "none" in hows:
            _log.info(
                "cannot re-announce %s on %s without a Leave: the host speaks "
                "IGMPv2/MLDv1 there and the process lacks CAP_NET_RAW",
                self._group,
                iface.name,
            )
            return
        how = ", ".join(sorted(set(hows)))
        _log.info("re-announced %s on %s after carrier returned (%s)", self._group, iface.name, how)
