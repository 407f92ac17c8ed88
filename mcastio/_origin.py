"""Where an endpoint's datagrams come from, and how they are marked: pure, no sockets.

The ``tos``, ``source_address`` and numeric ``source_port`` options of
:class:`MulticastEndpoint` are checked here and kept as one :class:`Origin`, which
the transmit sockets apply (:func:`._txnet.open_sender`). A source address also
narrows the endpoint to the interfaces that hold it (:meth:`Origin.narrow`).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass

from ._model import Group, Interface, ineligibility

__all__ = [
    "NO_ORIGIN",
    "Origin",
    "check_group_port_source",
    "fixed_source_port",
    "validate_source_address",
    "validate_tos",
]


@dataclass(frozen=True, slots=True)
class Origin:
    """What every transmit socket of an endpoint sets beyond the defaults.

    The defaults change nothing: the kernel's TOS byte (0), each interface's own
    address as the source, an ephemeral source port.
    """

    #: The IPv4 TOS byte or IPv6 traffic class (DSCP << 2 | ECN); None: the kernel's (0).
    tos: int | None = None
    #: The local unicast address copies leave from (compressed, without a scope).
    address: str | None = None
    #: The interface a link-local ``address`` was scoped to (``fe80::1%eth1``).
    scope: str | None = None
    #: A fixed source port of the sockets' own (not the group's port, which is
    #: ``source_port="group"``); None: an ephemeral one.
    port: int | None = None

    def owners(self, snapshot: Sequence[Interface]) -> tuple[Interface, ...]:
        """The interfaces that hold ``address`` (all of them when it is None)."""
        if self.address is None:
            return tuple(snapshot)
        family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        return tuple(
            i
            for i in snapshot
            if self.address in i.addresses(family) and self.scope in (None, i.name)
        )

    def narrow(
        self,
        snapshot: Sequence[Interface],
        chosen: Sequence[Interface],
        group: Group,
        *,
        missing_ok: bool,
    ) -> tuple[Interface, ...]:
        """``chosen`` narrowed to the interfaces holding the source address.

        At start (``missing_ok`` False) an address no interface holds, or one held
        only where the ``interfaces=`` selector leaves out, raises ``ValueError``,
        like an unknown interface name; later the endpoint just waits for it.
        """
        if self.address is None:
            return tuple(chosen)
        owners = {i.index for i in self.owners(snapshot)}
        kept = tuple(i for i in chosen if i.index in owners)
        if kept or missing_ok:
            return kept
        where = f"{self.address}%{self.scope}" if self.scope else self.address
        if not owners:
            held = [
                f"{i.name} {', '.join(i.addresses(group.family))}"
                for i in snapshot
                if i.addresses(group.family) and not i.loopback
            ]
            raise ValueError(
                f"source_address {where} is not an address of this host; "
                f"it has {'; '.join(held) or 'no address of that family'}"
            )
        names = [i.name for i in snapshot if i.index in owners and not ineligibility(i, group)]
        if names:
            raise ValueError(
                f"source_address {where} is on {', '.join(names)}, "
                "which the interfaces= selector leaves out"
            )
        return kept  # Held by an interface that cannot carry the group now: explained at start.


#: The default: nothing set beyond what the kernel does.
NO_ORIGIN = Origin()


def validate_tos(tos: int | None) -> int | None:
    """The TOS byte: 0-255, or None for the kernel's default."""
    if tos is None:
        return None
    if isinstance(tos, bool) or not isinstance(tos, int) or not 0 <= tos <= 255:
        raise ValueError(
            f"tos must be the TOS / traffic class byte from 0 to 255 (DSCP d is d << 2, "
            f"EF is 184), or None; not {tos!r}"
        )
    return tos


def validate_source_address(address: str | None, group: Group) -> tuple[str | None, str | None]:
    """(address, scope) for a local unicast address of the group's family.

    A link-local IPv6 address may name its interface: ``fe80::1%eth1``.
    """
    if address is None:
        return None, None
    if not isinstance(address, str):
        raise TypeError(f"source_address must be a str such as '192.0.2.1', not {address!r}")
    text, _, scope = address.partition("%")
    try:
        parsed = ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"source_address {address!r} is not an IP address") from None
    family = socket.AF_INET if parsed.version == 4 else socket.AF_INET6
    if family != group.family:
        raise ValueError(
            f"source_address {address} is IPv{parsed.version}; the group {group} is "
            f"IPv{group.address.version}"
        )
    if parsed.is_multicast or parsed.is_unspecified or parsed.is_loopback:
        raise ValueError(
            f"source_address {address} must be a unicast address of one of this host's "
            "interfaces (not multicast, unspecified or loopback)"
        )
    if scope and not parsed.is_link_local:
        raise ValueError(f"source_address {address}: only a link-local address takes a %scope")
    return parsed.compressed, scope or None


def fixed_source_port(mode: str | int, port: int) -> tuple[str, int | None]:
    """(the ``source_port`` mode, a fixed port of the sockets' own or None).

    A number equal to ``port`` is ``"group"``: sockets sending from the group's
    port are bound to the group, so they never take the port's unicast from the
    programs (or the endpoint's own receive sockets) that listen on it.
    """
    if isinstance(mode, str):
        return mode, None  # "ephemeral", "group" or a mistake, which _options names
    if isinstance(mode, bool) or not isinstance(mode, int) or not 1 <= mode <= 65535:
        raise ValueError(
            f"source_port must be 'ephemeral', 'group' or a port from 1 to 65535, not {mode!r}"
        )
    return ("group", None) if mode == port else ("ephemeral", mode)


def check_group_port_source(mode: str, address: str | None, group: Group) -> None:
    """Sending from the group's port and from a chosen address: IPv4 only."""
    if mode == "group" and address is not None and group.family == socket.AF_INET6:
        # The socket is bound to the group; IPv6 takes the source of what it sends
        # from the bind or the route, never from IPV6_MULTICAST_IF as IPv4 does.
        raise ValueError(
            f"source_address {address} cannot be combined with sending from the group's "
            "port over IPv6: Linux takes an IPv6 source from the socket's bind (here the "
            "group) or the route; choose another source port"
        )
