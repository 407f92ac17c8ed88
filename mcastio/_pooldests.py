"""Where a send goes: the endpoint's groups as (address, port) destinations.

A mixin of :class:`._transmit.TransmitPool`. The attributes stay on the pool,
since ``send_all_nowait`` reads ``_dest`` and ``_addresses`` once per call.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from . import _sendmany
from ._model import Group

__all__ = ["PoolDestinations"]


class PoolDestinations:
    """The groups a send may name; a call that names none needs exactly one."""

    _port: int
    _dest: tuple[str, int] | None
    _dests: dict[str, tuple[str, int]]
    # The packed sockaddr of each destination, as sendmmsg and send_each take it.
    _addresses: dict[tuple[str, int], bytes]

    def _init_destinations(self, group: Group, port: int) -> None:
        self._port = port
        self._dest = (str(group), port)
        self._dests = {str(group): self._dest}
        self._addresses = {self._dest: _sendmany.sockaddr(group, port)}

    def set_groups(self, groups: Sequence[Group]) -> None:
        """The groups sends may name; a call that names none needs exactly one."""
        self._dests = {str(g): (str(g), self._port) for g in groups}
        self._dest = next(iter(self._dests.values())) if len(self._dests) == 1 else None
        self._addresses = {(str(g), self._port): _sendmany.sockaddr(g, self._port) for g in groups}

    def _dest_for(self, group: str | None) -> tuple[str, int]:
        if group is None:
            if self._dest is None:
                raise ValueError(
                    f"this endpoint has {len(self._dests)} groups "
                    f"({', '.join(self._dests)}): name one with group="
                )
            return self._dest
        dest = self._dests.get(group)
        if dest is None:
            try:
                # Any spelling of the address: "FF02::1" finds "ff02::1".
                dest = self._dests.get(str(ipaddress.ip_address(group)))
            except ValueError:
                dest = None
        if dest is None:
            raise ValueError(
                f"{group!r} is not one of this endpoint's groups ({', '.join(self._dests)})"
            )
        return dest
