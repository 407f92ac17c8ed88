"""Replies are bounded and counted: a discovery burst fits, broadcast is no reply,
a spoofed off-link source is dropped and counted, by the addresses as they are now.

The peer acts as a responder: it waits for the endpoint's request on the group,
learns the transmit socket's port from it, and answers as the case says.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from mcastio import EndpointStats, MulticastEndpoint
from mcastio.testing import Lab, lab_support
from tests.conftest import module_lab, require, run, wait_for

pytestmark = pytest.mark.lab

GROUP, PORT = "239.255.23.11", 42311

_RESPONDER = r"""
import socket, struct, sys
group, port, dev, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("", port))
mreq = struct.pack("4s4si", socket.inet_aton(group), bytes(4), socket.if_nametoindex(dev))
s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
print("ready", flush=True)
_, (host, tx_port) = s.recvfrom(2048)
out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
out.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
if mode in ("burst", "flood"):
    for i in range(1000 if mode == "burst" else 20000):
        out.sendto(b"%04d" % i + bytes(356), (host, tx_port))
elif mode == "broadcast":
    subnet = host.rsplit(".", 1)[0] + ".255"
    for target in ("255.255.255.255", subnet):
        for _ in range(5):
            out.sendto(b"bcast", (target, tx_port))
    out.sendto(b"valid", (host, tx_port))
elif mode == "spoof":
    def csum(b):
        s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
        s = (s >> 16) + (s & 0xFFFF)
        return ~(s + (s >> 16)) & 0xFFFF
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    payload = b"spoof!"
    udp = struct.pack("!HHHH", 5353, tx_port, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                     socket.inet_aton("192.0.2.7"), socket.inet_aton(host))
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    for _ in range(5):
        raw.sendto(ip + udp, (host, 0))
    out.sendto(b"valid", (host, tx_port))
print("done", flush=True)
"""


@pytest.fixture(scope="module")
def replies_lab() -> Iterator[Lab]:
    require(lab_support())
    lab = Lab(links=1, ipv6=False, sysctls={"net.ipv4.conf.all.rp_filter": "1"})
    lab.build()
    try:
        yield lab
    finally:
        lab.destroy()


def answered(lab: Lab, mode: str) -> tuple[list[bytes], EndpointStats]:
    link = lab.link[0]
    peer = lab.popen(
        link.peer_ns, sys.executable, "-c", _RESPONDER, GROUP, str(PORT), link.peer_if, mode,
        stdout=subprocess.PIPE,
    )  # fmt: skip
    assert peer.stdout is not None
    assert peer.stdout.readline() == b"ready\n"

    async def main() -> tuple[list[bytes], EndpointStats]:
        async with MulticastEndpoint(GROUP, PORT, interfaces=[link.host_if], keepalive=False) as ep:
            sub = ep.subscribe(queue_size=4096)
            await ep.send_all(b"who is there?")
            if mode == "flood":
                # The loop is busy elsewhere while 20,000 replies arrive: the
                # socket's buffer overflows, and the kernel's drops must show.
                time.sleep(1.0)  # noqa: ASYNC251 - blocking the loop is the point
            got: list[bytes] = []
            while True:
                try:
                    dgram = await asyncio.wait_for(sub.__anext__(), 0.5)
                except asyncio.TimeoutError:
                    break
                if dgram.group is None:
                    got.append(dgram.data)
            return got, ep.stats

    try:
        with lab.inside():
            return run(main())
    finally:
        peer.wait(timeout=10)
        peer.communicate(timeout=5)


def test_a_discovery_burst_is_delivered_or_counted(replies_lab: Lab) -> None:
    got, stats = answered(replies_lab, "burst")
    print(f"burst of 1000 x 360 B: {len(got)} delivered, {stats.kernel_dropped} counted dropped")
    assert len(got) + stats.kernel_dropped == 1000
    # 2 MiB of buffer holds the whole burst; the kernel's default held 166.
    assert len(got) >= 900


def test_broadcast_is_no_reply(replies_lab: Lab) -> None:
    got, stats = answered(replies_lab, "broadcast")
    print(f"broadcast: delivered {got}")
    assert got == [b"valid"]
    assert stats.replies == 1


def test_a_spoofed_off_link_source_is_dropped_and_counted(replies_lab: Lab) -> None:
    got, stats = answered(replies_lab, "spoof")
    print(
        f"spoofed 192.0.2.7: delivered {got}, off link {getattr(stats, 'replies_off_link', None)}"
    )
    assert got == [b"valid"]
    assert stats.replies_off_link == 5


def test_replies_the_kernel_drops_are_counted(replies_lab: Lab) -> None:
    got, stats = answered(replies_lab, "flood")
    print(f"flood of 20000: {len(got)} delivered, {stats.kernel_dropped} counted dropped")
    assert stats.kernel_dropped > 0
    # Every reply is delivered or counted (a few may also die in the veth backlog).
    assert len(got) + stats.kernel_dropped >= 19_000


@pytest.fixture(scope="module")
def replies_lab6() -> Iterator[Lab]:
    yield from module_lab(links=1)


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_the_on_link_verdict_follows_an_address_change_under_a_live_socket(
    request: pytest.FixtureRequest, v6: bool
) -> None:
    """The host renumbers its link (10.98.0.0/24 to 10.99.0.0/24, fd98::/64 to
    fd99::/64) while the endpoint runs: its one transmit socket stays open (and keeps
    its port), and an answer is judged by the addresses as they are when it arrives.
    A verdict made before the change (cached per source) must not outlive it."""
    lab: Lab = request.getfixturevalue("replies_lab6" if v6 else "replies_lab")
    link = lab.link[0]
    family, group = (socket.AF_INET6, "ff02::2311") if v6 else (socket.AF_INET, GROUP)
    net = "fd9{}::{}/64" if v6 else "10.9{}.0.{}/24"
    old, new = (ipaddress.ip_interface(net.format(n, 1)) for n in (8, 9))
    # The peer answers from one address in each subnet (IPv4's strict rp_filter lets
    # both in: the host's default route is on this link).
    sources = {
        name: ipaddress.ip_interface(net.format(n, 2)) for name, n in (("old", 8), ("new", 9))
    }
    nodad = " nodad" if v6 else ""
    lab.sh(lab.host, f"ip addr add {old} dev {link.host_if}{nodad}")
    for addr in sources.values():
        lab.sh(link.peer_ns, f"ip addr add {addr} dev {link.peer_if}{nodad}")
    answerers: dict[str, socket.socket] = {}

    async def answer(ep: MulticastEndpoint, name: str, dest: tuple[str, int]) -> bool:
        """One answer from ``name``'s source: True if delivered, False if counted off link."""
        before = ep.stats
        answerers[name].sendto(name.encode(), dest)
        await wait_for(
            lambda: (
                ep.stats.replies + ep.stats.replies_off_link
                > before.replies + before.replies_off_link
            ),
            timeout=10.0,
            what=f"the answer from {sources[name].ip} judged",
        )
        return ep.stats.replies > before.replies

    def addresses_now(ep: MulticastEndpoint) -> set[object]:
        return {a for i in ep.interfaces if i.name == link.host_if for a in (*i.ipv4, *i.ipv6)}

    async def main() -> list[tuple[str, bool]]:
        async with MulticastEndpoint(group, PORT, interfaces=[link.host_if], keepalive=False) as ep:
            (tx,) = ep._engine.tx.sockets
            dest = ((link.host_addr6 if v6 else link.host_addr) or "", tx.sock.getsockname()[1])
            verdicts = [(f"{name} before", await answer(ep, name, dest)) for name in sources]
            lab.sh(lab.host, f"ip addr add {new} dev {link.host_if}{nodad}")
            lab.sh(lab.host, f"ip addr del {old} dev {link.host_if}")
            await wait_for(
                lambda: new in addresses_now(ep) and old not in addresses_now(ep),
                timeout=10.0,
                what="the endpoint sees the new address",
            )
            # The same socket: nothing was re-opened that could have cleared a verdict.
            assert ep._engine.tx.sockets == (tx,)
            verdicts += [(f"{name} after", await answer(ep, name, dest)) for name in sources]
            return verdicts

    try:
        for name, addr in sources.items():
            with lab.inside(link.peer_ns):
                sock = answerers[name] = socket.socket(family, socket.SOCK_DGRAM)
            sock.bind((str(addr.ip), 0))
        with lab.inside():
            verdicts = run(main())
    finally:
        for sock in answerers.values():
            sock.close()
        for addr in sources.values():
            lab.sh(link.peer_ns, f"ip addr del {addr} dev {link.peer_if}", check=False)
        for iface in (old, new):
            lab.sh(lab.host, f"ip addr del {iface} dev {link.host_if}", check=False)
    assert verdicts == [
        ("old before", True),
        ("new before", False),
        ("old after", False),
        ("new after", True),
    ]
