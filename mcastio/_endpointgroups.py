"""The groups of a :class:`MulticastEndpoint`: which, added and removed at run time.

A mixin kept apart from :mod:`._endpoint` so that neither class grows past what
one reads at once; docs/reference/groups-and-interfaces.md describes the behaviour.
"""

from __future__ import annotations

from ._engine import Engine
from ._errors import EndpointClosedError
from ._model import parse_group

__all__ = ["EndpointGroups"]


class EndpointGroups:
    """Groups, send-only mode and refused links of an endpoint (``self._engine``)."""

    _engine: Engine

    @property
    def group(self) -> str:
        """The endpoint's group; with several, a ``ValueError`` says to use :attr:`groups`."""
        groups = self._engine.groups
        if len(groups) != 1:
            raise ValueError(
                f"this endpoint has {len(groups)} groups ({', '.join(map(str, groups))}): "
                "use .groups"
            )
        return str(groups[0])

    @property
    def groups(self) -> tuple[str, ...]:
        """Every group of the endpoint, in the order given, then added."""
        return tuple(str(g) for g in self._engine.groups)

    @property
    def joins(self) -> bool:
        """False for a send-only endpoint (``join=False``): it holds no membership."""
        return self._engine.options.join

    @property
    def refused(self) -> dict[str, OSError]:
        """Interfaces left out of :meth:`send_all` because sends there were refused.

        Each was reported once, in that send's result and one log line, with its
        reason (e.g. ``ENOKEY`` on a WireGuard link without a peer, ``EPERM`` from a
        firewall rule); it is tried again when the interface changes.
        """
        return self._engine.tx.refused

    # -- groups at run time ----------------------------------------------------------

    async def add_group(self, group: str) -> None:
        """Join ``group`` (same family and port) on every interface in use.

        All or nothing: if any interface refuses the join, it is undone everywhere
        and ``MulticastError`` says why. The watcher joins it on interfaces that come
        later, like every other group. On a send-only endpoint it only becomes a
        destination. Done when this returns; nothing is awaited.
        """
        engine = self._engine
        if engine.state == "closed":
            raise EndpointClosedError("this endpoint was closed; create a new one")
        engine.add_group(engine.check_new_group(group))

    async def remove_group(self, group: str) -> None:
        """Leave ``group`` on every interface and stop delivering it, at once.

        Its receive sockets are closed (the kernel sends the Leaves, and drops what
        it still held for them), and datagrams of it already read but still queued
        in a subscription are discarded: none is handed out after this returns. An
        endpoint keeps at least one group; close it instead of removing the last.
        """
        engine = self._engine
        if engine.state == "closed":
            raise EndpointClosedError("this endpoint was closed; create a new one")
        target = parse_group(group)
        if target not in engine.memberships:
            raise ValueError(
                f"{group!r} is not one of this endpoint's groups ({', '.join(self.groups)})"
            )
        if len(engine.groups) == 1:
            raise ValueError(f"{target} is this endpoint's only group; close the endpoint instead")
        engine.remove_group(target)
