"""The exception hierarchy: one root, so callers can catch everything mcastio raises."""

from __future__ import annotations

__all__ = [
    "EndpointClosedError",
    "InterfaceGoneError",
    "MembershipLimitError",
    "MulticastError",
    "NotOnLinkError",
]


class MulticastError(Exception):
    """Root of every error mcastio raises, except ``ValueError`` for bad arguments."""


class EndpointClosedError(MulticastError):
    """The endpoint was used after ``aclose()`` or before ``start()``."""


class MembershipLimitError(MulticastError):
    """The kernel refused another group membership on a socket (IPv4:
    ``net.ipv4.igmp_max_memberships``; IPv4 and IPv6: ``net.core.optmem_max``)."""


class RawAccessError(MulticastError):
    """A raw or packet socket is refused: the process needs root or CAP_NET_RAW."""


class NotOnLinkError(MulticastError):
    """A unicast destination is not on the link it would leave by: reaching it
    needs a router, and an answer never leaves by the default route."""


class InterfaceGoneError(MulticastError):
    """The interface a unicast datagram should leave by is no longer one of the
    endpoint's (it went away or changed since the datagram arrived)."""
