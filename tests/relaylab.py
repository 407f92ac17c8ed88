"""Segments and relay hosts for the relay lab: Linux bridges, and namespaces plugged into them.

``RelayLab`` builds three segments (bridges A, B and C in one switch namespace,
snooping off) and named member namespaces, each with one interface per segment
it sits on, called ``segA``, ``segB``, ``segC``. Built from ``mcastio.testing.Lab``
without changing it; the lab's ``destroy`` removes everything.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from mcastio.testing import Lab, LabError
from mcastio.testing.responders import Avahi

__all__ = ["BROWSE", "SERVICE_TYPE", "Counter4", "RelayLab", "RelayProc", "avahi_service", "sender"]

SEGMENTS = {"A": 1, "B": 2, "C": 3}


@dataclass
class RelayLab:
    lab: Lab
    sw: str = ""
    #: member name -> {segment: address}
    members: dict[str, dict[str, str]] = field(default_factory=dict)

    def build(self) -> None:
        self.sw = f"{self.lab.tag}-rsw"
        self.lab._add_ns(self.sw)
        for seg in SEGMENTS:
            self.lab.sh(self.sw, f"ip link add br{seg} type bridge mcast_snooping 0")
            self.lab.sh(self.sw, f"ip link set br{seg} up")

    def ns(self, member: str) -> str:
        return f"{self.lab.tag}-{member}"

    def add(self, member: str, host: int, segments: Sequence[str]) -> None:
        """Plug ``member`` into ``segments`` with address 10.19.<seg>.<host>."""
        ns = self.ns(member)
        self.lab._add_ns(ns)
        self.lab.sh(ns, "ip link set lo up")
        self.members[member] = {}
        for seg in segments:
            port = f"{member}{seg}"
            ifname = f"seg{seg}"
            addr = f"10.19.{SEGMENTS[seg]}.{host}"
            self.lab.sh(self.sw, f"ip link add {port} type veth peer name {ifname} netns {ns}")
            self.lab.sh(self.sw, f"ip link set {port} master br{seg} up")
            # Without duplicate address detection the link-local address is usable at once.
            self.lab.sh(ns, f"sysctl -qw net.ipv6.conf.{ifname}.accept_dad=0")
            self.lab.sh(ns, f"ip addr add {addr}/24 dev {ifname}")
            self.lab.sh(ns, f"ip link set {ifname} up")
            self.members[member][seg] = addr
        if len(segments) > 1:
            # Unicast is routed between the segments (as between home VLANs); multicast
            # never is: this kernel has no multicast routing.
            self.lab.sh(ns, "sysctl -qw net.ipv4.ip_forward=1")

    def route(self, member: str, via: str) -> None:
        self.lab.sh(self.ns(member), f"ip route add default via {via}")

    def relay(self, member: str, *args: str) -> RelayProc:
        """Start ``mcastio relay`` in ``member`` between all its segments."""
        argv = [sys.executable, "-m", "mcastio", "relay", "--json", *args]
        for seg in self.members[member]:
            argv += ["-i", f"seg{seg}"]
        proc = self.lab.popen(
            self.ns(member), *argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        return RelayProc(member, proc)

    @contextlib.contextmanager
    def inside(self, member: str) -> Iterator[None]:
        with self.lab.inside(self.ns(member)):
            yield


class RelayProc:
    """A running ``mcastio relay --json``; :meth:`stop` returns its counters."""

    def __init__(self, member: str, proc: subprocess.Popen[bytes]) -> None:
        self.member = member
        self.proc = proc
        self.log = b""

    def wait_ready(self, timeout: float = 10.0) -> None:
        assert self.proc.stderr is not None
        fd = self.proc.stderr.fileno()
        deadline = time.monotonic() + timeout
        while b"relaying" not in self.log:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise LabError(f"relay in {self.member} not ready: {self.log.decode()}")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise LabError(f"relay in {self.member} exited: {self.log.decode()}")
            self.log += chunk

    def stop(self) -> dict[str, dict[str, int]]:
        """SIGTERM, then the counters it printed, keyed by 'from->to'."""
        self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=10)
        self.log += err
        assert self.proc.returncode == 0, self.log.decode()
        lines = [ln for ln in out.decode().splitlines() if ln.startswith("{")]
        data = json.loads(lines[-1])["relay"]["directions"]
        return {f"{d['from']}->{d['to']}": d for d in data}


class Counter4:
    """A plain IPv4 socket in one namespace that counts the payloads arriving on a group."""

    def __init__(self, rl: RelayLab, member: str, seg: str, group: str, port: int) -> None:
        with rl.inside(member):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((group, port))
            index = socket.if_nametoindex(f"seg{seg}")
            mreq = struct.pack("=4s4si", socket.inet_aton(group), bytes(4), index)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
        sock.setblocking(False)
        self.sock = sock
        self.counts: Counter[bytes] = Counter()
        self.arrivals: list[tuple[float, bytes]] = []

    def drain(self) -> Counter[bytes]:
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return self.counts
            self.counts[data] += 1
            self.arrivals.append((time.monotonic(), data))

    def close(self) -> None:
        self.sock.close()


def sender(rl: RelayLab, member: str, seg: str, *, loop: bool = True) -> socket.socket:
    """A socket in ``member`` whose multicast leaves by ``seg`` (looped back when ``loop``)."""
    with rl.inside(member):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        index = socket.if_nametoindex(f"seg{seg}")
        sock.setsockopt(
            socket.IPPROTO_IP,
            socket.IP_MULTICAST_IF,
            struct.pack("=4s4si", bytes(4), bytes(4), index),
        )
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, int(loop))
        sock.bind((rl.members[member][seg], 0))
    return sock


# avahi-daemon with one service of its own: a private tmpfs over its services
# directory (next to the private /run the lab's Avahi already mounts) holds the file.
#: The service type the avahi daemons of the relay lab publish.
SERVICE_TYPE = "_mcastiorelay._tcp"


def avahi_service(lab: Lab, ns: str, interfaces: Sequence[str], name: str) -> Avahi:
    """avahi-daemon publishing its host name and one ``_mcastiorelay._tcp`` service;
    its private D-Bus lets ``avahi-browse`` ask it (:meth:`Avahi.browse`)."""
    services = [(f"svc-{name}", SERVICE_TYPE, 9)]
    return Avahi(lab, ns, interfaces, name, dbus=True, services=services)


#: A python-zeroconf browser: looks for services of a type, and prints the one whose
#: name starts with the wanted text once resolved (server and addresses).
BROWSE = """
import sys, time
from zeroconf import IPVersion, ServiceBrowser, Zeroconf
kind, wanted, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
found = []
class Listener:
    def add_service(self, zc, type_, name):
        found.append(name)
    def update_service(self, zc, type_, name):
        pass
    def remove_service(self, zc, type_, name):
        pass
zc = Zeroconf(ip_version=IPVersion.V4Only)
browser = ServiceBrowser(zc, kind, Listener())
deadline = time.monotonic() + timeout
done = False
while time.monotonic() < deadline and not done:
    time.sleep(0.05)
    for name in [n for n in found if n.startswith(wanted)]:
        info = zc.get_service_info(kind, name, timeout=1000)
        if info is not None and info.parsed_addresses():
            print("found", name, info.server, " ".join(info.parsed_addresses()), flush=True)
            done = True
browser.cancel()
zc.close()
"""
