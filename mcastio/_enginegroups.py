"""An endpoint's groups at run time, and the keepers of their memberships.

A mixin of :class:`._engine.Engine`, kept apart so that neither grows past what
one reads at once: it checks a group before it is added, joins or leaves it on
every interface in use (:mod:`._links`), and runs one keeper per group
(:mod:`._keepalive`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
from typing import TYPE_CHECKING

from ._groupset import GroupMemberships
from ._keeper import KeepaliveState
from ._links import Links
from ._model import Group, Interface, is_eligible, parse_group, validate_sources
from ._options import EndpointOptions
from ._readers import Readers

if TYPE_CHECKING:
    from ._keepalive import Keepalive

__all__ = ["EngineGroups"]

_log = logging.getLogger("mcastio")


class EngineGroups:
    """Adding and removing groups on an open endpoint (see Engine)."""

    options: EndpointOptions
    memberships: GroupMemberships
    links: Links
    readers: Readers
    keepalives: dict[Group, Keepalive]
    #: None until asked; then whether the platform refused the keeper.
    _keeper_refused: bool | None = None
    loop: asyncio.AbstractEventLoop | None
    state: str

    def _keeps(self) -> bool:
        """Whether this endpoint runs a keeper per group: asked for, and available.

        The keeper is on by default, so where the platform lacks it (raw IGMP/MLD
        and /proc/net/igmp are Linux's) it is left out, once, with the reason logged.
        """
        if self.options.keepalive is None or not self.options.join:
            return False
        if self._keeper_refused is None:
            from ._platform import capabilities, unavailable

            caps = capabilities()
            self._keeper_refused = not caps.keeper
            if self._keeper_refused:
                _log.info("%s; keepalive is off", unavailable("the membership keeper", caps))
        return not self._keeper_refused

    def _keeper(self, group: Group) -> Keepalive:
        assert self.options.keepalive is not None
        # Imported here: the keeper is Linux's (raw IGMP/MLD reports, /proc/net/igmp).
        from ._keepalive import Keepalive

        return Keepalive(
            group,
            self.options.sources,
            self.options.keepalive,
            lambda: self._joined(group),
        )

    # -- groups at run time ----------------------------------------------------------

    def check_new_group(self, group: str) -> Group:
        """The group to add, checked like the constructor's groups; ValueError if not."""
        parsed = parse_group(group)
        if parsed.family != self.options.group.family:
            raise ValueError(
                f"group {parsed} is not of this endpoint's address family ({self.options.group} "
                "is); use another endpoint for the other family"
            )
        if parsed in self.memberships:
            raise ValueError(f"group {parsed} is already one of this endpoint's groups")
        if self.options.sources:
            validate_sources(parsed, self.options.sources)
        unusable = [i.name for i in self.links.interfaces if not is_eligible(i, parsed)]
        if unusable:
            # Every interface in use holds every group; this one cannot, on these.
            raise ValueError(
                f"group {parsed} cannot be carried on {', '.join(unusable)} (its scope needs "
                "an address those interfaces lack); use another endpoint for it"
            )
        return parsed

    def add_group(self, group: Group) -> None:
        """Join ``group`` on every interface in use, or raise MulticastError having joined none."""
        self.links.add_group(group)
        if self._keeps():
            keeper = self.keepalives[group] = self._keeper(group)
            if self.state == "open" and self.loop is not None:
                keeper.start(self.loop)

    def remove_group(self, group: Group) -> None:
        """Leave ``group`` everywhere; nothing of it is delivered from now on."""
        keeper = self.keepalives.pop(group, None)
        if keeper is not None:
            keeper.close()
        self.links.remove_group(group)
        # Already read but still queued for a reader: never handed out after the leave.
        self.readers.discard_group(str(group))

    def keepalive_states(self) -> tuple[KeepaliveState, ...]:
        if self.state != "open":
            return ()
        return tuple(
            dataclasses.replace(state, group=str(group))
            for group, keeper in self.keepalives.items()
            for state in keeper.states()
        )

    def _joined(self, group: Group) -> list[tuple[Interface, socket.socket]]:
        pairs = []
        for iface in self.links.interfaces:
            sock = self.memberships.socket_of(group, iface.index)
            if sock is not None:
                pairs.append((iface, sock))
        return pairs
