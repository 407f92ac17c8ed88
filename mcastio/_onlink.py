"""Where a unicast datagram may go: the on-link rule for answers and ``send_to``.

Pure: the endpoint passes in the interfaces it uses right now (a snapshot), so
every decision here is tested without sockets. A unicast datagram leaves by one
named interface, to an address on that link only:

- IPv4: the address lies in a prefix of one of the interface's addresses;
- IPv6 link-local (fe80::/10): always on-link; its scope is the interface;
- other IPv6: the address lies in a prefix of one of the interface's addresses.

Anything else would need a router, and a reply to a query must not leave by the
default route (RFC 6762 §11: a responder answers only on-link queriers). The
local address the datagram leaves from is the interface's address in that prefix.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass

from ._errors import InterfaceGoneError, NotOnLinkError
from ._model import Interface

__all__ = ["UnicastRoute", "route_answer", "route_unicast"]

SockAddr = tuple[str, int] | tuple[str, int, int, int]


@dataclass(frozen=True, slots=True)
class UnicastRoute:
    """How one unicast datagram leaves: to ``destination`` by ``ifindex`` from ``source``."""

    #: The sockaddr for sendmsg: (host, port) or (host, port, 0, scope_id).
    destination: SockAddr
    #: The interface it leaves by (``IP_PKTINFO``/``IPV6_PKTINFO`` pin it there).
    ifindex: int
    #: The local address it leaves from; ``""`` lets the kernel pick one on that
    #: link (an IPv6 link-local destination gets the interface's link-local address).
    source: str
    interface: str


def _parse(
    address: object, family: socket.AddressFamily, interface: Interface
) -> ipaddress._BaseAddress:
    if not isinstance(address, str):
        raise TypeError(f"address must be a str such as '10.0.0.2' or 'fe80::2', not {address!r}")
    text = address.strip()
    if "%" in text:
        text, zone = text.split("%", 1)
        if zone not in (interface.name, str(interface.index)):
            raise ValueError(
                f"address {address!r} names zone {zone!r} but the interface is {interface.name!r}"
            )
    try:
        addr = ipaddress.ip_address(text)
    except ValueError as exc:
        raise ValueError(f"address {address!r} is not an IP address") from exc
    want = 4 if family == socket.AF_INET else 6
    if addr.version != want:
        raise ValueError(
            f"address {address!r} is IPv{addr.version} but this endpoint is IPv{want}; "
            "send from an endpoint of that family (DualStackEndpoint picks it for you)"
        )
    if addr.is_multicast or addr.is_unspecified:
        raise ValueError(
            f"address {address!r} must be one host's unicast address; "
            "send to the group with send() or send_all()"
        )
    return addr


def _check_port(port: object) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError(f"port must be an int in 1..65535, not {port!r}")
    return port


def route_unicast(
    address: str,
    port: int,
    interface: str,
    current: Sequence[Interface],
    family: socket.AddressFamily,
    scope_id: int = 0,
) -> UnicastRoute:
    """The route for a datagram to ``address``:``port`` out of ``interface``.

    ``current`` is the endpoint's interfaces now. Raises :class:`InterfaceGoneError`
    when ``interface`` is not among them, :class:`NotOnLinkError` when the address
    is not on that link, ``ValueError`` for a bad address or port. ``scope_id``
    (from a received IPv6 source) must then be the interface's index.
    """
    port = _check_port(port)
    iface = next((i for i in current if i.name == interface), None)
    if iface is None:
        names = ", ".join(i.name for i in current) or "none"
        raise InterfaceGoneError(
            f"{interface!r} is not one of this endpoint's interfaces (any more); "
            f"current: {names}. Nothing was sent: the link that would carry it is gone"
        )
    addr = _parse(address, family, iface)
    if isinstance(addr, ipaddress.IPv6Address) and addr.is_link_local:
        if scope_id not in (0, iface.index):
            raise NotOnLinkError(
                f"{addr} with scope {scope_id} is on another link than {iface.name} "
                f"(index {iface.index})"
            )
        # A link-local address is on every link; its scope says which one.
        return UnicastRoute((str(addr), port, 0, iface.index), iface.index, "", iface.name)
    nets: Sequence[ipaddress.IPv4Interface | ipaddress.IPv6Interface]
    nets = iface.ipv4 if family == socket.AF_INET else iface.ipv6
    # IPv6 link-local prefixes were handled above; an IPv4 link-local one
    # (169.254/16, RFC 3927) is an ordinary on-link prefix.
    v6 = family == socket.AF_INET6
    for net in nets:
        if addr in net.network and not (v6 and net.ip.is_link_local):
            dest: SockAddr = (
                (str(addr), port) if family == socket.AF_INET else (str(addr), port, 0, 0)
            )
            return UnicastRoute(dest, iface.index, str(net.ip), iface.name)
    prefixes = ", ".join(str(n.network) for n in nets if not (v6 and n.ip.is_link_local))
    raise NotOnLinkError(
        f"{addr} is not on {iface.name} (its prefixes: {prefixes or 'none'}); it would need "
        "a router, "
        "and mcastio never sends an answer out of the default route"
    )


def route_answer(
    source: object, interface: str, current: Sequence[Interface], family: socket.AddressFamily
) -> UnicastRoute:
    """The route back to a received datagram's ``source``, out of the interface it came in on."""
    if not isinstance(source, tuple) or len(source) not in (2, 4):
        raise TypeError(
            f"source must be a (host, port[, flowinfo, scope_id]) tuple, not {source!r}"
        )
    scope = source[3] if len(source) == 4 else 0
    if not isinstance(scope, int):
        raise TypeError(f"the scope id in {source!r} must be an int")
    return route_unicast(source[0], source[1], interface, current, family, scope)
