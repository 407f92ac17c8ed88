"""Does UDP GSO (UDP_SEGMENT) work for multicast here? ``python benchmarks/gso.py``.

Builds its own lab (root or ``unshare -rnm``): the host sends bursts of
same-size datagrams to a group as one GSO message (``mcastio._platform.linux._cdrain.send_many``
with a segment size) out of ``eth0``; two sockets in the peer behind ``eth0``
and, with ``IP_MULTICAST_LOOP``, two sockets on the host itself count what
arrives. Every receiver must get every datagram, each whole. Then the same
over a Linux bridge with two more peers behind it, IPv4 and IPv6. Prints one
line per case: whether the kernel accepted the send, and what each receiver got.
"""

from __future__ import annotations

import os
import platform
import socket
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mcastio.testing import Lab, lab_support

PORT = 5790
SEGMENT = 1000
BURSTS, PER_BURST = 20, 16


def receiver(family: socket.AddressFamily, group: str, ifname: str) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    index = socket.if_nametoindex(ifname)
    if family == socket.AF_INET:
        sock.bind(("0.0.0.0", PORT))
        mreq = struct.pack("=4s4si", socket.inet_aton(group), b"\0" * 4, index)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    else:
        sock.bind(("::", PORT))
        mreq6 = socket.inet_pton(socket.AF_INET6, group) + struct.pack("=I", index)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq6)
    sock.setblocking(False)
    return sock


def count(sock: socket.socket) -> tuple[int, int]:
    """(datagrams, of which the wrong size) waiting on ``sock``."""
    n = bad = 0
    while True:
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return n, bad
        n += 1
        bad += len(data) != SEGMENT


def case(lab: Lab, family: socket.AddressFamily, out_if: str, peers: list[tuple[str, str]]) -> str:
    from mcastio._platform.linux import _cdrain

    group = "239.255.79.1" if family == socket.AF_INET else "ff05::79:1"
    socks: list[tuple[str, socket.socket]] = []
    for ns, ifname in peers:
        with lab.inside(ns):
            socks += [(f"{ns[-2:]}/{ifname}#{i}", receiver(family, group, ifname)) for i in (1, 2)]
    with lab.inside():
        socks += [(f"host/{out_if}#{i}", receiver(family, group, out_if)) for i in (1, 2)]
        tx = socket.socket(family, socket.SOCK_DGRAM)
    with lab.inside():
        index = socket.if_nametoindex(out_if)
    if family == socket.AF_INET:
        tx.setsockopt(
            socket.IPPROTO_IP,
            socket.IP_MULTICAST_IF,
            struct.pack("=4s4si", b"\0" * 4, b"\0" * 4, index),
        )
        tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
        address = struct.pack(
            "=HH4s8x", socket.AF_INET, socket.htons(PORT), socket.inet_aton(group)
        )
    else:
        tx.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
        tx.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 1)
        packed = socket.inet_pton(socket.AF_INET6, group)
        address = struct.pack("=HHI16sI", socket.AF_INET6, socket.htons(PORT), 0, packed, 0)
    payloads = [bytes([i]) * SEGMENT for i in range(PER_BURST)]
    accepted = "accepted"
    try:
        for _ in range(BURSTS):
            _cdrain.send_many(tx.fileno(), payloads, address, SEGMENT)
            time.sleep(0.002)
    except OSError as exc:
        accepted = f"refused ({exc})"
    time.sleep(0.2)
    want = BURSTS * PER_BURST
    got = []
    for name, sock in socks:
        n, bad = count(sock)
        got.append(f"{name} {n}/{want}" + (f" ({bad} wrong size)" if bad else ""))
        sock.close()
    tx.close()
    fam = "IPv4" if family == socket.AF_INET else "IPv6"
    return f"{fam} via {out_if}: {accepted}; " + ", ".join(got)


def main() -> int:
    reason = lab_support()
    if reason is not None:
        print(f"run as root or under 'unshare -rnm': {reason}", file=sys.stderr)
        return 2
    print(f"kernel {platform.release()}, UDP_SEGMENT bursts of {PER_BURST} x {SEGMENT} bytes")
    with Lab(links=1) as lab:
        lab.wait_ipv6_ready(lab.link)
        peer = lab.link[0]
        # A bridge on the host with two more peers behind it (veth ports).
        lab.sh(lab.host, "ip link add br0 type bridge mcast_snooping 0")
        bridged = []
        for n in (1, 2):
            ns = f"{lab.tag}-b{n}"
            lab._add_ns(ns)
            lab.sh(ns, "ip link set lo up")
            lab.sh(lab.host, f"ip link add bp{n} type veth peer name vb{n} netns {ns}")
            lab.sh(lab.host, f"ip link set bp{n} master br0 up")
            lab.sh(ns, f"sysctl -qw net.ipv6.conf.vb{n}.accept_dad=0")
            lab.sh(ns, f"ip addr add 10.99.0.{n + 1}/24 dev vb{n}")
            lab.sh(ns, f"ip -6 addr add fd99::{n + 1}/64 dev vb{n} nodad")
            lab.sh(ns, f"ip link set vb{n} up")
            bridged.append((ns, f"vb{n}"))
        lab.sh(lab.host, "sysctl -qw net.ipv6.conf.br0.accept_dad=0")
        lab.sh(lab.host, "ip addr add 10.99.0.1/24 dev br0")
        lab.sh(lab.host, "ip -6 addr add fd99::1/64 dev br0 nodad")
        lab.sh(lab.host, "ip link set br0 up")
        time.sleep(1.0)
        for family in (socket.AF_INET, socket.AF_INET6):
            print(case(lab, family, peer.host_if, [(peer.peer_ns, peer.peer_if)]), flush=True)
            print(case(lab, family, "br0", bridged), flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
