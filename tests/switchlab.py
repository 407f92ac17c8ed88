"""The article's network for lab tests: a Linux bridge with IGMP snooping.

``add_snooping_switch(lab)`` adds a host link into a snooping bridge with a short
membership interval and a sender namespace on the bridge; ``add_switch_port``
adds another namespace on the bridge; ``start_querier`` sends IGMP (or MLD)
queries from any source address, plausible for the subnet or not.
Built from ``mcastio.testing.Lab`` without changing it.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass

from mcastio.testing import Lab, LabError, Link

__all__ = [
    "SnoopingSwitch",
    "SwitchPort",
    "add_snooping_switch",
    "add_switch_port",
    "mdb",
    "start_querier",
    "start_tcpdump",
    "stop_tcpdump",
]


@dataclass(frozen=True, slots=True)
class SnoopingSwitch:
    """A Linux bridge with IGMP snooping between one host link and a sender."""

    #: Namespace holding the bridge.
    ns: str
    bridge: str
    #: The host's link into the bridge; its peer is the sender namespace.
    link: Link


# Runs in a peer namespace: IGMPv2 general queries with a chosen source address,
# built by hand (IPPROTO_RAW) because the kernel never sends queries itself; with
# source "mld", MLDv1 general queries from the link-local address instead.
_QUERIER = r"""
import socket, struct, sys, time
source, dev, interval, max_resp = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
if source == "mld":
    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, socket.if_nametoindex(dev))
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 1)
    s.setsockopt(socket.IPPROTO_IPV6, 54, bytes((0, 0, 5, 2, 0, 0, 1, 0)))  # Router Alert
    query = struct.pack("!BBHHH16s", 130, 0, 0, max_resp * 100, 0, bytes(16))
    while True:
        s.sendto(query, ("ff02::1", 0, 0, socket.if_nametoindex(dev)))
        time.sleep(interval)
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


@dataclass(frozen=True, slots=True)
class SwitchPort:
    """Another namespace on the bridge (a second receiver, a rival querier)."""

    ns: str
    #: The interface inside ``ns``.
    ifname: str
    #: The bridge port it is plugged into, in the switch namespace.
    port: str
    addr: str
    addr6: str | None


def add_snooping_switch(
    lab: Lab,
    *,
    membership_interval: float = 2.0,
    query_interval: float = 1.0,
    host_flood: bool = True,
    ipv6: bool = False,
) -> SnoopingSwitch:
    """Add link ``eth<N>`` into a Linux bridge with IGMP snooping, plus a sender on it.

    The bridge runs no querier of its own; start one with :func:`start_querier`.
    The returned switch's ``link`` works with ``Lab.peer_send`` and friends: its
    peer is a sender namespace on the bridge, 10.21x.N.2 in the host's subnet.
    ``host_flood=False`` sets ``mcast_flood off`` on the host's port: unregistered
    groups, and queries from other ports, no longer reach the host. ``ipv6``
    adds fd21:N::1 and ::2 to the host and the sender.
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
    if not host_flood:
        lab.sh(sw, "bridge link set dev p-host mcast_flood off")
    lab.sh(sw, "ip link set br0 up")
    host_addr6 = peer_addr6 = None
    if ipv6:
        host_addr6, peer_addr6 = f"fd21:{n:x}::1", f"fd21:{n:x}::2"
        for ns, ifname, addr6 in ((lab.host, host_if, host_addr6), (sender, "veth0", peer_addr6)):
            lab.sh(ns, f"sysctl -qw net.ipv6.conf.{ifname}.accept_dad=0")
            lab.sh(ns, f"ip -6 addr add {addr6}/64 dev {ifname} nodad")
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
        host_addr6=host_addr6,
        peer_addr6=peer_addr6,
    )
    lab.link.append(link)
    _wait_oper_up(lab, lab.host, host_if)
    if ipv6:
        lab.wait_ipv6_ready([link])
    return SnoopingSwitch(ns=sw, bridge="br0", link=link)


def add_switch_port(lab: Lab, switch: SnoopingSwitch, number: int) -> SwitchPort:
    """Plug a new namespace into the bridge at 10.21x.N.<number> (and ::<number>)."""
    ns, port = f"{switch.ns}-r{number}", f"p-r{number}"
    lab._add_ns(ns)
    lab.sh(ns, "ip link set lo up")
    base = switch.link.host_addr.rsplit(".", 1)[0]
    addr = f"{base}.{number}"
    addr6 = None
    lab.sh(ns, f"ip link add veth0 type veth peer name {port} netns {switch.ns}")
    lab.sh(switch.ns, f"ip link set {port} master {switch.bridge}")
    lab.sh(switch.ns, f"ip link set {port} up")
    lab.sh(ns, "sysctl -qw net.ipv6.conf.veth0.accept_dad=0")
    lab.sh(ns, f"ip addr add {addr}/24 dev veth0")
    if switch.link.host_addr6 is not None:
        addr6 = switch.link.host_addr6.rsplit(":", 1)[0] + f":{number:x}"
        lab.sh(ns, f"ip -6 addr add {addr6}/64 dev veth0 nodad")
    lab.sh(ns, "ip link set veth0 up")
    _wait_oper_up(lab, ns, "veth0")
    return SwitchPort(ns=ns, ifname="veth0", port=port, addr=addr, addr6=addr6)


def start_querier(
    lab: Lab,
    link: Link | SwitchPort,
    source: str,
    interval: float = 0.5,
    max_response: float = 0.2,
) -> subprocess.Popen[bytes]:
    """Send IGMPv2 general queries from ``source`` out of ``link``'s peer.

    ``source`` may be any address, also one outside the link's subnet: that is
    the article's badly configured switch querier. ``"mld"`` sends MLDv1 general
    queries from the peer's link-local address instead. Hosts answer within
    ``max_response`` seconds; keep it below the switch's membership interval.
    Stopped by ``Lab.destroy``.
    """
    ns, dev = (link.peer_ns, link.peer_if) if isinstance(link, Link) else (link.ns, link.ifname)
    return lab.popen(
        ns,
        sys.executable,
        "-c",
        _QUERIER,
        source,
        dev,
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


def start_tcpdump(lab: Lab, ns: str, ifname: str, bpf: str) -> subprocess.Popen[bytes]:
    """Verbose tcpdump (``-vv``: IGMPv3 and MLDv2 group records); returns once armed."""
    return lab.tcpdump(ns, ifname, bpf, verbose=True)


def stop_tcpdump(proc: subprocess.Popen[bytes]) -> list[str]:
    """Stop a capture and return its output joined into one line per packet."""
    time.sleep(0.2)  # let the last packets be printed
    proc.terminate()
    out, _ = proc.communicate(timeout=5)
    packets: list[str] = []
    for line in out.decode().splitlines():
        # Continuation lines of -vv output start with whitespace.
        if line[:1].isspace() and packets:
            packets[-1] += " " + line.strip()
        else:
            packets.append(line.strip())
    return packets


def mdb(lab: Lab, switch: SnoopingSwitch) -> str:
    """The bridge's multicast database (``bridge mdb show``): who it forwards to."""
    return lab.run(switch.ns, "bridge", "mdb", "show", "dev", switch.bridge).stdout
