"""The endpoint's options, checked in one place: pure, no sockets, no asyncio.

Every keyword of :class:`MulticastEndpoint` (and of the entries that build one) is
validated here, at the call that received it, so a bad value fails with a clear
``ValueError`` or ``TypeError`` on the line that passed it, never later at start.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from ._model import (
    Group,
    Interface,
    InterfaceSelector,
    parse_groups,
    validate_selector,
    validate_sources,
)
from ._origin import (
    NO_ORIGIN,
    Origin,
    check_group_port_source,
    fixed_source_port,
    validate_source_address,
    validate_tos,
)
from ._watch import InterfaceEvent

__all__ = [
    "DEFAULT_COALESCE_DELAY",
    "DEFAULT_KEEPALIVE",
    "DEFAULT_RECEIVE_BUFFER",
    "MAX_QUEUE_SIZE",
    "MAX_RECEIVE_BUFFER",
    "MIN_POLL_INTERVAL",
    "EndpointOptions",
    "SnapshotSource",
    "SourcePort",
    "validate_callback",
    "validate_coalesce_delay",
    "validate_flag",
    "validate_keepalive",
    "validate_max_batch",
    "validate_poll_interval",
    "validate_port",
    "validate_queue_size",
    "validate_receive_buffer",
    "validate_source_port",
    "validate_ttl",
]

SnapshotSource = Callable[[], Sequence[Interface]]
SourcePort = Literal["ephemeral", "group"]

#: SO_RCVBUF requested per receive socket: ~2500 small datagrams, so a flood survives
#: the consumer being descheduled for tens of milliseconds (capped by net.core.rmem_max).
DEFAULT_RECEIVE_BUFFER = 2 * 1024 * 1024
#: Seconds a receive socket is left unread under a flood, so that each read finds
#: a large batch: ~130 datagrams at 100 000/s instead of 2 to 4 per wake-up.
DEFAULT_COALESCE_DELAY = 0.001
#: Seconds without a report before the keeper makes one. RFC 3376's membership
#: interval is 260 s (robustness 2 x query interval 125 s + 10 s); 60 s leaves
#: room for a lost report and for switches configured with shorter timeouts.
DEFAULT_KEEPALIVE = 60.0

#: The largest ``queue_size``: a million queued datagrams is already gigabytes at
#: full size, and anything larger would be an unbounded queue in all but name.
MAX_QUEUE_SIZE = 1 << 20
#: SO_RCVBUF is a C int; the kernel caps it further at net.core.rmem_max.
MAX_RECEIVE_BUFFER = (1 << 31) - 1
#: The shortest ``poll_interval``: each poll re-reads every interface of the host.
MIN_POLL_INTERVAL = 0.05


def validate_port(port: int) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"port must be an integer from 1 to 65535, not {port!r}")
    return port


def validate_ttl(ttl: int) -> int:
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not 0 <= ttl <= 255:
        raise ValueError(
            f"ttl must be an integer from 0 to 255 (1 keeps traffic on the link), not {ttl!r}"
        )
    return ttl


def validate_source_port(mode: str) -> SourcePort:
    """``"ephemeral"`` (replies come back to the endpoint) or ``"group"`` (mDNS)."""
    if mode == "ephemeral":
        return "ephemeral"
    if mode == "group":
        return "group"
    raise ValueError(
        f"source_port must be 'ephemeral' (copies leave from a port of their own, and "
        f"unicast replies are delivered), 'group' (copies leave from the group's port, "
        f"as mDNS requires) or a port number, not {mode!r}"
    )


def validate_queue_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_QUEUE_SIZE:
        raise ValueError(f"queue_size must be an integer from 1 to {MAX_QUEUE_SIZE}, not {size!r}")
    return size


def validate_receive_buffer(size: int | None) -> int | None:
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_RECEIVE_BUFFER:
        raise ValueError(
            f"receive_buffer must be a number of bytes from 1 to {MAX_RECEIVE_BUFFER} "
            f"(the kernel caps it at net.core.rmem_max), or None; not {size!r}"
        )
    return size


def validate_coalesce_delay(delay: float) -> float:
    if isinstance(delay, bool) or not isinstance(delay, (int, float)) or not 0 <= delay <= 1:
        raise ValueError(f"coalesce_delay must be a number of seconds from 0 to 1, not {delay!r}")
    return float(delay)


def validate_flag(name: str, value: object) -> bool:
    """A real bool: ``bool('no')`` is True, so a string would silently mean yes."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, not {value!r}")
    return value


def validate_poll_interval(seconds: float) -> float:
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise TypeError(f"poll_interval must be a number of seconds, not {seconds!r}")
    if not MIN_POLL_INTERVAL <= seconds < float("inf"):
        raise ValueError(
            f"poll_interval must be at least {MIN_POLL_INTERVAL} seconds (each poll re-reads "
            f"every interface), and finite; not {seconds!r}"
        )
    return float(seconds)


def validate_callback(name: str, value: object) -> None:
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be a callable or None, not {value!r}")


def validate_max_batch(size: int | None) -> int | None:
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"max_batch must be a positive integer or None, not {size!r}")
    return size


def validate_keepalive(value: bool | float) -> float | None:
    """The refresh interval in seconds, or ``None`` for off."""
    if value is True:
        return DEFAULT_KEEPALIVE
    if value is False or value is None:
        return None
    if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ValueError(
            "keepalive must be True (refresh every "
            f"{DEFAULT_KEEPALIVE:g} s), False (off) or a positive number of seconds, "
            f"not {value!r}"
        )
    return float(value)


@dataclass(frozen=True, slots=True)
class EndpointOptions:
    """Every option of one endpoint, checked; see :class:`MulticastEndpoint`."""

    #: The groups given at construction (the endpoint may add and remove some later).
    groups: tuple[Group, ...]
    port: int
    selector: InterfaceSelector
    ttl: int
    loopback: bool
    queue_size: int
    sources: tuple[str, ...]
    watch: bool
    poll_interval: float
    netlink: bool
    on_interface_event: Callable[[InterfaceEvent], None] | None
    receive_buffer: int | None
    receive_ttl: bool
    source_port: SourcePort
    #: The keeper's interval in seconds; ``None`` when it is off.
    keepalive: float | None
    coalesce_delay: float
    snapshot_source: SnapshotSource | None
    #: False for a send-only endpoint: it joins nothing, ever.
    join: bool = True
    #: False: transmit sockets take no unicast reply (the kernel discards and counts them).
    replies: bool = True
    #: The TOS byte, source address and fixed source port of the transmit sockets.
    origin: Origin = NO_ORIGIN

    @property
    def group(self) -> Group:
        """The first group: the endpoint's address family and, alone, its group."""
        return self.groups[0]

    @classmethod
    def build(
        cls,
        group: str | Sequence[str],
        port: int,
        *,
        interfaces: InterfaceSelector = None,
        ttl: int = 1,
        loopback: bool = False,
        queue_size: int = 1024,
        snapshot_source: SnapshotSource | None = None,
        sources: Sequence[str] | None = None,
        watch: bool = True,
        poll_interval: float = 1.0,
        netlink: bool = True,
        on_interface_event: Callable[[InterfaceEvent], None] | None = None,
        receive_buffer: int | None = DEFAULT_RECEIVE_BUFFER,
        receive_ttl: bool = False,
        source_port: str | int = "ephemeral",
        keepalive: bool | float = True,
        coalesce_delay: float = DEFAULT_COALESCE_DELAY,
        join: bool = True,
        replies: bool = True,
        tos: int | None = None,
        source_address: str | None = None,
    ) -> EndpointOptions:
        """Check every option; the first bad one raises ValueError or TypeError."""
        parsed = parse_groups(group)
        for name, flag in (
            ("join", join),
            ("loopback", loopback),
            ("watch", watch),
            ("netlink", netlink),
            ("receive_ttl", receive_ttl),
            ("replies", replies),
        ):
            validate_flag(name, flag)
        validate_callback("on_interface_event", on_interface_event)
        validate_callback("snapshot_source", snapshot_source)
        checked_sources = validate_sources(parsed[0], sources)
        for other in parsed[1:]:
            # The same senders apply to every group, so each must be source-specific.
            validate_sources(other, sources)
        address, scope = validate_source_address(source_address, parsed[0])
        mode, fixed_port = fixed_source_port(source_port, validate_port(port))
        checked_mode = validate_source_port(mode)
        check_group_port_source(checked_mode, address, parsed[0])
        return cls(
            groups=parsed,
            port=validate_port(port),
            selector=validate_selector(interfaces),
            ttl=validate_ttl(ttl),
            loopback=loopback,
            queue_size=validate_queue_size(queue_size),
            sources=checked_sources,
            watch=watch,
            poll_interval=validate_poll_interval(poll_interval),
            netlink=netlink,
            on_interface_event=on_interface_event,
            receive_buffer=validate_receive_buffer(receive_buffer),
            receive_ttl=receive_ttl,
            source_port=checked_mode,
            keepalive=validate_keepalive(keepalive),
            coalesce_delay=validate_coalesce_delay(coalesce_delay),
            snapshot_source=snapshot_source,
            join=join,
            replies=replies,
            origin=Origin(validate_tos(tos), address, scope, fixed_port),
        )
