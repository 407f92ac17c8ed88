"""mcastio: asyncio IP multicast on every interface of a multi-homed host."""

from ._drain import drain_path
from ._dualstack import DualSendResult, DualStackEndpoint, open_dual_stack
from ._endpoint import EndpointStats, MulticastEndpoint
from ._errors import (
    EndpointClosedError,
    InterfaceGoneError,
    MembershipLimitError,
    MulticastError,
    NotOnLinkError,
)
from ._hostmonitor import HostMonitorState
from ._keeper import KeepaliveState
from ._model import Datagram, Interface, SendResult
from ._platform import Capabilities, capabilities
from ._protocol import MulticastProtocol, MulticastTransport, create_multicast_endpoint
from ._querier import Querier, QuerierState
from ._relay import Relay, RelayStats
from ._selection import (
    Selection,
    default_route_links,
    link_with_vlans,
    no_virtual_links,
    physical_links,
)
from ._sendmany import BatchSendResult
from ._subscription import BatchSubscription, Subscription
from ._watch import InterfaceEvent
from ._watcher import InterfaceEventStream

__version__ = "0.1.0.dev0"

__all__ = [
    "BatchSendResult",
    "BatchSubscription",
    "Capabilities",
    "Datagram",
    "DualSendResult",
    "DualStackEndpoint",
    "EndpointClosedError",
    "EndpointStats",
    "HostMonitorState",
    "Interface",
    "InterfaceEvent",
    "InterfaceEventStream",
    "InterfaceGoneError",
    "KeepaliveState",
    "MembershipLimitError",
    "MulticastEndpoint",
    "MulticastError",
    "MulticastProtocol",
    "MulticastTransport",
    "NotOnLinkError",
    "Querier",
    "QuerierState",
    "Relay",
    "RelayStats",
    "Selection",
    "SendResult",
    "Subscription",
    "capabilities",
    "create_multicast_endpoint",
    "default_route_links",
    "drain_path",
    "link_with_vlans",
    "no_virtual_links",
    "open_dual_stack",
    "physical_links",
]

# Present public objects as living at the top level, as httpcore does.
for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("mcastio._"):
        _obj.__module__ = "mcastio"
del _name, _obj
