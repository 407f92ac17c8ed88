"""Interfaces a user can name: selections for ``interfaces=``, pure decisions over a snapshot.

Each selection decides from what the kernel says a device is (its link kind, the
device it sits on, the bridge it is a port of, a bus device behind it, wifi),
read into :class:`Interface` by :mod:`._discovery`. Only where the kernel could
not be asked (``Interface.kind`` is None: no rtnetlink) do names decide, by the
prefixes listed here. docs/reference/groups-and-interfaces.md states every rule.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from ._model import Interface

__all__ = [
    "CONTAINER_VM_VPN_KINDS",
    "VIRTUAL_NAME_PREFIXES",
    "Selection",
    "default_route_links",
    "link_with_vlans",
    "no_virtual_links",
    "physical_links",
]

#: Link kinds (IFLA_INFO_KIND) that are container, VM or VPN plumbing, or reach no
#: other host: a veth pair's end, tun/tap (VM NICs, OpenVPN, ZeroTier, Tailscale),
#: WireGuard, overlay and IP tunnels, VM taps on macvlan, and devices that carry
#: nothing off the host (dummy, ifb, nlmon).
CONTAINER_VM_VPN_KINDS = frozenset(
    {
        "veth",
        "netkit",
        "tun",
        "wireguard",
        "ovpn",
        "ovpn-dco",
        "vxlan",
        "geneve",
        "ipip",
        "sit",
        "ip6tnl",
        "gre",
        "gretap",
        "ip6gre",
        "ip6gretap",
        "erspan",
        "vti",
        "vti6",
        "xfrm",
        "macvtap",
        "ipvtap",
        "dummy",
        "ifb",
        "nlmon",
    }
)
#: Kinds that stack on other devices: virtual exactly when what they sit on is.
_STACKED_KINDS = frozenset({"vlan", "macvlan", "ipvlan", "bond", "team", "bridge", "vrf"})
#: Used only when the kernel could not be asked (``Interface.kind`` None).
VIRTUAL_NAME_PREFIXES = (
    "docker",
    "br-",
    "veth",
    "cni",
    "flannel",
    "cali",
    "lxc",
    "lxdbr",
    "podman",
    "virbr",
    "vnet",
    "vmnet",
    "vboxnet",
    "tun",
    "tap",
    "wg",
    "tailscale",
    "zt",
    "utun",
)
# Deeper than any real stack (a VLAN on a bond on a bridge...); guards a loop in bad data.
_MAX_DEPTH = 8

Rule = Literal["physical", "no-virtual", "with-vlans", "default-route"]


@dataclass(frozen=True, slots=True)
class Selection:
    """A named rule for ``interfaces=``: which devices of a snapshot it keeps.

    The endpoint applies it to every snapshot (at start and on every interface
    change), then keeps only the eligible interfaces among those picked.
    """

    rule: Rule
    name: str = ""

    def pick(self, snapshot: Sequence[Interface]) -> frozenset[int]:
        """The indexes of the devices this selection keeps."""
        by_index = {i.index: i for i in snapshot}
        if self.rule == "physical":
            return frozenset(i.index for i in snapshot if _physical(i))
        if self.rule == "no-virtual":
            ports = _ports(snapshot)
            return frozenset(i.index for i in snapshot if not _virtual(i, by_index, ports, 0))
        if self.rule == "default-route":
            return frozenset(i.index for i in snapshot if i.is_default)
        return _with_vlans(self.name, snapshot, by_index)

    def __str__(self) -> str:
        if self.rule == "with-vlans":
            return f"link_with_vlans({self.name!r})"
        return {
            "physical": "physical_links()",
            "no-virtual": "no_virtual_links()",
            "default-route": "default_route_links()",
        }[self.rule]


def physical_links() -> Selection:
    """NICs and wifi: a device with a bus device behind it and no link kind, or wifi.

    Not a VLAN, bond or bridge on top of them (see :func:`link_with_vlans` and
    :func:`no_virtual_links` for those).
    """
    return Selection("physical")


def no_virtual_links() -> Selection:
    """Every device except container, VM and VPN ones (see the docs for the exact rule)."""
    return Selection("no-virtual")


def link_with_vlans(name: str) -> Selection:
    """The device ``name`` and every VLAN stacked on it (802.1Q/802.1ad, at any depth)."""
    if not isinstance(name, str) or not name or ":" in name:
        raise ValueError(f"link_with_vlans needs an interface name such as 'eth0', not {name!r}")
    return Selection("with-vlans", name)


def default_route_links() -> Selection:
    """The devices that carry an IPv4 or IPv6 default route."""
    return Selection("default-route")


def _by_name(iface: Interface) -> bool:
    return iface.name.startswith(VIRTUAL_NAME_PREFIXES)


def _physical(iface: Interface) -> bool:
    if iface.loopback:
        return False
    if iface.wireless:
        return True
    if iface.kind is None:
        return not _by_name(iface)
    return iface.kind == "" and iface.bus


def _ports(snapshot: Sequence[Interface]) -> dict[int, list[Interface]]:
    ports: dict[int, list[Interface]] = {}
    for iface in snapshot:
        if iface.master:
            ports.setdefault(iface.master, []).append(iface)
    return ports


def _virtual(
    iface: Interface,
    by_index: Mapping[int, Interface],
    ports: Mapping[int, list[Interface]],
    depth: int,
) -> bool:
    if iface.loopback:
        return True  # Reaches no other host either.
    if iface.kind is None:
        return _by_name(iface)
    if iface.kind in CONTAINER_VM_VPN_KINDS or depth > _MAX_DEPTH:
        return True
    if iface.kind in _STACKED_KINDS:
        below = [p for p in ports.get(iface.index, ())]
        parent = by_index.get(iface.parent)
        if parent is not None:
            below.append(parent)
        # A bridge or bond is the LAN when a real device is one of its ports (br0 over
        # eth0); docker0, virbr0 and cni0 have only veth or tap ports, or none.
        return not any(not _virtual(p, by_index, ports, depth + 1) for p in below)
    # No kind, or one not listed (a NIC's own driver, macsec, hsr...): a real link.
    return False


def _with_vlans(
    name: str, snapshot: Sequence[Interface], by_index: Mapping[int, Interface]
) -> frozenset[int]:
    root = next((i for i in snapshot if i.name == name), None)
    if root is None:
        return frozenset()
    kept = {root.index}
    for iface in snapshot:
        if iface.kind is None:
            # No kernel facts: VLANs named NAME.VID, as vconfig and ifupdown name them.
            if iface.name.startswith(f"{name}."):
                kept.add(iface.index)
            continue
        node, depth = iface, 0
        while node.kind == "vlan" and node.parent and depth <= _MAX_DEPTH:
            if node.parent == root.index:
                kept.add(iface.index)
                break
            parent = by_index.get(node.parent)
            if parent is None:
                break
            node, depth = parent, depth + 1
    return frozenset(kept)
