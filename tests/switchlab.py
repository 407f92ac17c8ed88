"""The article's network for lab tests: a Linux bridge with IGMP snooping.

``add_snooping_switch(lab)`` adds a host link into a snooping bridge with a short
membership interval and a sender namespace on the bridge; ``start_querier``
sends IGMP queries from any source address, plausible for the subnet or not.
Built from ``mcastio.testing.Lab`` without changing it.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass

from mcastio.testing import Lab, LabError, Link

__all__ = ["SnoopingSwitch", "add_snooping_switch", "mdb", "start_querier"]


@dataclass(frozen=True, slots=True)
class SnoopingSwitch:
    """A Linux bridge with IGMP snooping between one host link and a sender."""

    #: Namespace holding the bridge.
    ns: str
    bridge: str
    #: The host's link into the bridge; its peer is the sender namespace.
    link: Link


# Runs in a peer namespace: IGMPv2 general queries with a chosen source address,
# built by hand (IPPROTO_RAW) because the kernel never sends queries itself.
_QUERIER = r"""
import socket, struct, sys, time
source, dev, interval, max_resp = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
def checksum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xFFFF)
    return ~(s + (s >> 16)) & 0xFFFF
# Type 0x11, max resp in tenths of a second, group 0.0.0.0: a v2 general query.
igmp = struct.pack("!BBH4s", 0x11, max_resp, 0, bytes(4))
igmp = igmp[:2] + struct.pack("!H", checksum(igmp)) + igmp[4:]
ra = b"\x94\x04\x00\x00"  # IP Router Alert, as RFC 2236 queries carry
ip = struct.pack("!BBHHHBBH4s4s", 0x46, 0xC0, 24 + len(igmp), 0, 0, 1, 2, 0,
                 socket.inet_aton(source), socket.inet_aton("224.0.0.1")) + ra
ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, dev.encode())
while True:
    s.sendto(ip + igmp, ("224.0.0.1", 0))
    time.sleep(interval)
"""


def add_snooping_switch(
    lab: Lab, *, membership_interval: float = 2.0, query_interval: float = 1.0
) -> SnoopingSwitch:
    """Add link ``eth<N>`` into a Linux bridge with IGMP snooping, plus a sender on it.

    The bridge runs no querier of its own; start one with :func:`start_querier`.
    The returned switch's ``link`` works with ``Lab.peer_send`` and friends: its
    peer is a sender namespace on the bridge, 10.21x.N.2 in the host's subnet.
    """
    n = len(lab.link)
    sw, sender = f"{lab.tag}-sw{n}", f"{lab.tag}-s{n}"
    # Registered with the lab, so Lab.destroy removes them with the rest.
    lab._add_ns(sw)
    lab._add_ns(sender)
    lab.sh(sender, "ip link set lo up")
    host_if = f"eth{n}"
    host_addr, peer_addr = (
        f"10.{210 + n // 250}.{n % 250}.1",
        f"10.{210 + n // 250}.{n % 250}.2",
    )

    def cs(seconds: float) -> str:
        # The bridge takes intervals in centiseconds.
        return str(max(1, round(seconds * 100)))

    lab.run(
        sw, "ip", "link", "add", "br0", "type", "bridge",
        "mcast_snooping", "1",
        "mcast_querier", "0",
        "mcast_membership_interval", cs(membership_interval),
        "mcast_query_interval", cs(query_interval),
        "mcast_query_response_interval", cs(min(query_interval / 2, 1.0)),
        "mcast_startup_query_interval", cs(query_interval / 4),
    )  # fmt: skip
    lab.sh(lab.host, f"ip link add {host_if} type veth peer name p-host netns {sw}")
    lab.sh(sender, f"ip link add veth0 type veth peer name p-send netns {sw}")
    for port in ("p-host", "p-send"):
        lab.sh(sw, f"ip link set {port} master br0")
        lab.sh(sw, f"ip link set {port} up")
    lab.sh(sw, "ip link set br0 up")
    lab.sh(lab.host, f"ip addr add {host_addr}/24 dev {host_if}")
    lab.sh(lab.host, f"ip link set {host_if} up")
    lab.sh(sender, f"ip addr add {peer_addr}/24 dev veth0")
    lab.sh(sender, "ip link set veth0 up")
    lab.sh(sender, f"ip route add default via {host_addr}")
    link = Link(
        index=n,
        host_if=host_if,
        peer_if="veth0",
        peer_ns=sender,
        host_addr=host_addr,
        peer_addr=peer_addr,
    )
    lab.link.append(link)
    _wait_oper_up(lab, lab.host, host_if)
    return SnoopingSwitch(ns=sw, bridge="br0", link=link)


def start_querier(
    lab: Lab, link: Link, source: str, interval: float = 0.5, max_response: float = 0.2
) -> subprocess.Popen[bytes]:
    """Send IGMPv2 general queries from ``source`` out of ``link``'s peer.

    ``source`` may be any address, also one outside the link's subnet: that is
    the article's badly configured switch querier. Hosts answer within
    ``max_response`` seconds; keep it below the switch's membership interval.
    Stopped by ``Lab.destroy``.
    """
    return lab.popen(
        link.peer_ns,
        sys.executable,
        "-c",
        _QUERIER,
        source,
        link.peer_if,
        str(interval),
        str(max(1, round(max_response * 10))),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _wait_oper_up(lab: Lab, ns: str, ifname: str, timeout: float = 5.0) -> None:
    # A bridge port's carrier reaches the other end through linkwatch, which may
    # lag by up to a second; until then the link is not RUNNING and not eligible.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "state UP" in lab.run(ns, "ip", "link", "show", "dev", ifname).stdout:
            return
        time.sleep(0.02)
    raise LabError(f"{ifname} in {ns} did not come up within {timeout}s")


def mdb(lab: Lab, switch: SnoopingSwitch) -> str:
    """The bridge's multicast database (``bridge mdb show``): who it forwards to."""
    return lab.run(switch.ns, "bridge", "mdb", "show", "dev", switch.bridge).stdout
