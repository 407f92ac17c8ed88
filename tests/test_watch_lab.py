"""The watcher on real kernels: a running endpoint follows links and addresses.

Every test changes the lab under a started endpoint and checks, with real peers
(socat, tcpdump), that traffic flows where it should without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
import subprocess
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest

from mcastio import Datagram, InterfaceEvent, MulticastEndpoint, Subscription
from mcastio._discovery import read_snapshot
from mcastio.testing import Lab, Link, tcpdump_argv
from tests.conftest import run, wait_for

pytestmark = pytest.mark.lab

GROUP = "239.255.42.1"
GROUP6 = "ff05::4242"
PORT = 5042

T = TypeVar("T")


def carrier(lab: Lab, ifname: str) -> bool:
    """Whether ``ifname`` on the host has its carrier (its veth peer is up)."""
    return "LOWER_UP" in lab.run(lab.host, "ip", "-o", "link", "show", ifname).stdout


def names(ep: MulticastEndpoint) -> set[str]:
    return {i.name for i in ep.interfaces}


def index_of(ep: MulticastEndpoint, name: str) -> int:
    return next(i.index for i in ep.interfaces if i.name == name)


async def receive_until(sub: Subscription, payload: bytes, timeout: float = 3.0) -> list[Datagram]:
    """Every datagram up to and including the first carrying ``payload``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    got: list[Datagram] = []
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise AssertionError(f"{payload!r} not received; got {got}")
        try:
            dgram = await asyncio.wait_for(sub.__anext__(), remaining)
        except asyncio.TimeoutError:
            continue
        got.append(dgram)
        if dgram.data == payload:
            return got


class PeerReader:
    """A socat receiver in a peer, read incrementally so a test can wait on it."""

    def __init__(self, lab: Lab, link: Link, group: str = GROUP, port: int = PORT) -> None:
        spec = f"UDP4-RECV:{port},ip-add-membership={group}:{link.peer_if},reuseaddr"
        self.proc = lab.popen(link.peer_ns, "socat", "-u", spec, "STDOUT", stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        os.set_blocking(self.proc.stdout.fileno(), False)
        lab.wait_for_membership(link.peer_ns, link.peer_if, group, self.proc)
        self.data = b""

    def _read(self) -> bytes:
        assert self.proc.stdout is not None
        chunk = self.proc.stdout.read()
        if chunk:
            self.data += chunk
        return self.data

    async def wait_for(self, payload: bytes, timeout: float = 3.0) -> None:
        await wait_for(lambda: payload in self._read(), timeout, f"peer got {payload!r}")


@contextlib.contextmanager
def capture(lab: Lab, link: Link, *expr: str, device: str = "") -> Iterator[list[str]]:
    """tcpdump in ``link``'s peer (on its veth unless ``device`` is given); the list
    fills when the block ends."""
    proc = lab.popen(
        link.peer_ns,
        # Immediate mode: without it packets wait in a kernel block for up to a second.
        *tcpdump_argv(), "-i", device or link.peer_if, "--immediate-mode", "-n", "-l", "-tt", "-v",
        *expr,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    # tcpdump announces on stderr once the capture is live.
    banner = ""
    while "listening" not in banner:
        line = proc.stderr.readline().decode()
        assert line, f"tcpdump failed: {banner}"
        banner += line
    lines: list[str] = []
    try:
        yield lines
    finally:
        time.sleep(0.05)  # let the last packets reach the capture buffer
        proc.terminate()
        out, _ = proc.communicate(timeout=5)
        lines.extend(out.decode().splitlines())


def in_lab(lab: Lab, main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    with lab.inside():
        return run(main())


@pytest.fixture
def no_warnings(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.INFO, logger="mcastio")
    yield
    bad = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not bad, bad


# -- the cases of issue 3 ------------------------------------------------------------------


@pytest.mark.linux_profile(
    reason="asserts the netlink watch (the poll's new link: test_portable_lab.py)"
)
def test_new_link_is_joined_and_sent_on(lab: Lab, no_warnings: None) -> None:
    async def main() -> None:
        async with MulticastEndpoint(GROUP, PORT) as ep:
            assert ep.watch_mode == "netlink"
            events = ep.interface_events()
            sub = ep.subscribe()
            new = lab.add_link()
            await wait_for(lambda: "eth3" in names(ep), what="eth3 joined")
            event = await asyncio.wait_for(events.__anext__(), 2)
            assert (event.kind, event.name) == ("added", "eth3")
            assert new.host_addr in event.addresses
            lab.peer_send(new, GROUP, PORT, b"from-eth3\n")
            got = await receive_until(sub, b"from-eth3\n")
            assert got[-1].interface == "eth3"
            reader = PeerReader(lab, new)
            # A veth drops what it sends before its peer end is up: wait for carrier.
            await wait_for(lambda: carrier(lab, new.host_if), what="eth3 carrier")
            results = await ep.send_all(b"to-all\n")
            assert {r.interface for r in results if r.ok} == {"eth0", "eth1", "eth2", "eth3"}
            await reader.wait_for(b"to-all\n")

    in_lab(lab, main)


def test_removed_link_leaves_the_others_working(lab: Lab, no_warnings: None) -> None:
    async def main() -> None:
        async with MulticastEndpoint(GROUP, PORT) as ep:
            events = ep.interface_events()
            sub = ep.subscribe()
            lab.remove_link(lab.link[2])
            await wait_for(lambda: names(ep) == {"eth0", "eth1"}, what="eth2 dropped")
            event = await asyncio.wait_for(events.__anext__(), 2)
            assert (event.kind, event.name) == ("removed", "eth2")
            results = await ep.send_all(b"still\n")
            assert [(r.interface, r.ok) for r in results] == [("eth0", True), ("eth1", True)]
            lab.peer_send(lab.link[1], GROUP, PORT, b"eth1-alive\n")
            assert (await receive_until(sub, b"eth1-alive\n"))[-1].interface == "eth1"

    in_lab(lab, main)


def test_second_address_delivers_each_datagram_once(lab: Lab, no_warnings: None) -> None:
    link = lab.link[1]

    async def main() -> None:
        async with MulticastEndpoint(GROUP, PORT) as ep:
            events = ep.interface_events()
            sub = ep.subscribe()
            lab.sh(lab.host, f"ip addr add 10.200.1.5/24 dev {link.host_if}")
            event = await asyncio.wait_for(events.__anext__(), 2)
            assert event.kind == "changed"
            assert {"10.200.1.1", "10.200.1.5"} <= set(event.addresses)
            lab.peer_send(link, GROUP, PORT, b"one\n")
            lab.peer_send(link, GROUP, PORT, b"two\n")
            got = await receive_until(sub, b"two\n")
            assert [d.data for d in got] == [b"one\n", b"two\n"]
            assert {d.interface for d in got} == {"eth1"}

    in_lab(lab, main)


def test_changed_address_resumes_and_sends_from_the_new_one(lab: Lab, need_tcpdump: None) -> None:
    link = lab.link[1]

    async def main() -> None:
        async with MulticastEndpoint(GROUP, PORT) as ep:
            sub = ep.subscribe()
            lab.sh(lab.host, f"ip addr del {link.host_addr}/24 dev {link.host_if}")
            lab.sh(lab.host, f"ip addr add 10.200.1.7/24 dev {link.host_if}")

            def moved() -> bool:
                eth1 = [i for i in ep.interfaces if i.name == "eth1"]
                return bool(eth1) and [str(a.ip) for a in eth1[0].ipv4] == ["10.200.1.7"]

            await wait_for(moved, what="eth1 on its new address")
            lab.peer_send(link, GROUP, PORT, b"after-move\n")
            assert (await receive_until(sub, b"after-move\n"))[-1].interface == "eth1"
            with capture(lab, link, "udp", "port", str(PORT)) as lines:
                result = await ep.send(b"hello\n", interface="eth1")
                assert result.ok
            sources = re.findall(rf"(\S+)\.\d+ > {re.escape(GROUP)}\.{PORT}:", "\n".join(lines))
            assert sources == ["10.200.1.7"], lines

    in_lab(lab, main)


def test_admin_down_then_up(lab: Lab, no_warnings: None) -> None:
    link = lab.link[1]

    async def main() -> None:
        async with MulticastEndpoint(GROUP, PORT) as ep:
            sub = ep.subscribe()
            lab.sh(lab.host, f"ip link set {link.host_if} down")
            await wait_for(lambda: "eth1" not in names(ep), what="eth1 dropped")
            assert [r.interface for r in await ep.send_all(b"x\n")] == ["eth0", "eth2"]
            lab.sh(lab.host, f"ip link set {link.host_if} up")
            await wait_for(lambda: "eth1" in names(ep), what="eth1 back")
            lab.peer_send(link, GROUP, PORT, b"back\n")
            assert (await receive_until(sub, b"back\n"))[-1].interface == "eth1"
            reader = PeerReader(lab, link)
            await ep.send(b"out-again\n", interface="eth1")
            await reader.wait_for(b"out-again\n")

    in_lab(lab, main)


def test_carrier_return_reannounces_within_one_second(lab: Lab, need_tcpdump: None) -> None:
    link = lab.link[1]
    control = "239.255.42.99"

    async def main() -> float:
        # The control endpoint does not watch: it shows the kernel alone stays silent.
        async with (
            MulticastEndpoint(GROUP, PORT) as ep,
            MulticastEndpoint(control, PORT, watch=False),
        ):
            lab.sh(link.peer_ns, f"ip link set {link.peer_if} down")
            await wait_for(lambda: "eth1" not in names(ep), what="eth1 lost carrier")
            # Let the joins' own retransmitted reports (robustness 2, 1 s apart) pass.
            await asyncio.sleep(1.2)
            # A down veth cannot be captured on; "any" follows it as it comes up.
            with capture(lab, link, "igmp", device="any") as lines:
                t_up = time.time()
                lab.sh(link.peer_ns, f"ip link set {link.peer_if} up")
                await wait_for(lambda: "eth1" in names(ep), what="eth1 carrier back")
                await asyncio.sleep(1.0)
        reports = [ln for ln in "\n".join(lines).split("\n") if re.match(r"^\d+\.\d+ ", ln)]
        text = "\n".join(lines)
        assert GROUP in text, text
        assert control not in text, "the kernel re-reported by itself; the test proves nothing"
        first = min(float(ln.split()[0]) for ln in reports)
        return first - t_up

    delay = in_lab(lab, main)
    print(f"first IGMP report {delay * 1000:.1f} ms after carrier returned")
    assert delay < 1.0, f"first IGMP report {delay:.3f}s after carrier returned"


@pytest.mark.linux_profile(reason="a raw MLD report, and an IPv6 group wider than the link")
def test_carrier_return_sends_an_mld_report_for_ipv6(lab: Lab, need_tcpdump: None) -> None:
    # Unlike IGMP, the kernel itself re-reports IPv6 groups here (carrier return
    # restarts DAD, and MLD sends its initial report after it), so this checks the
    # requirement end to end rather than the endpoint's own re-announce.
    link = lab.link[1]

    async def main() -> tuple[float, str]:
        async with MulticastEndpoint(GROUP6, PORT) as ep:
            lab.sh(link.peer_ns, f"ip link set {link.peer_if} down")
            await wait_for(lambda: "eth1" not in names(ep), what="eth1 lost carrier")
            await asyncio.sleep(1.2)  # past the join's own retransmitted reports
            # MLD sits behind a hop-by-hop header, which the "icmp6" filter misses.
            with capture(lab, link, "ip6", "and", "not", "udp", device="any") as lines:
                t_up = time.time()
                lab.sh(link.peer_ns, f"ip link set {link.peer_if} up")
                await wait_for(lambda: "eth1" in names(ep), what="eth1 carrier back")
                await asyncio.sleep(1.0)
        return t_up, "\n".join(lines)

    t_up, text = in_lab(lab, main)
    times = [
        float(line.split()[0])
        for line in text.splitlines()
        if "listener report" in line and f"gaddr {GROUP6} " in line
    ]
    assert times, text
    assert min(times) - t_up < 1.0, text


@pytest.mark.linux_profile(reason="a flap too short for a poll is seen by netlink only")
def test_carrier_flap_too_short_to_notice_still_reannounces(lab: Lab, need_tcpdump: None) -> None:
    link = lab.link[1]
    control = "239.255.42.99"

    async def main() -> str:
        async with (
            MulticastEndpoint(GROUP, PORT) as ep,
            MulticastEndpoint(control, PORT, watch=False),
        ):
            await asyncio.sleep(1.2)  # past the joins' own retransmitted reports
            with capture(lab, link, "igmp", device="any") as lines:
                # Down and up in one go: the host may never see the link without carrier.
                lab.run(
                    link.peer_ns,
                    "sh", "-c", f"ip link set {link.peer_if} down; ip link set {link.peer_if} up",
                )  # fmt: skip
                await asyncio.sleep(1.0)
            assert "eth1" in names(ep)
        return "\n".join(lines)

    text = in_lab(lab, main)
    assert GROUP in text, text
    assert control not in text, "the kernel re-reported by itself; the test proves nothing"


def test_recreated_interface_gets_its_new_index(lab: Lab, no_warnings: None) -> None:
    link = lab.link[1]

    async def main() -> None:
        async with MulticastEndpoint(GROUP, PORT) as ep:
            events = ep.interface_events()
            sub = ep.subscribe()
            old_index = index_of(ep, "eth1")
            lab.remove_link(link)
            await wait_for(lambda: "eth1" not in names(ep), what="eth1 gone")
            lab.recreate_link(link)
            await wait_for(lambda: "eth1" in names(ep), what="eth1 re-created")
            new_index = index_of(ep, "eth1")
            assert new_index != old_index
            seen: list[InterfaceEvent] = []
            while len(seen) < 2:
                seen.append(await asyncio.wait_for(events.__anext__(), 2))
            assert [(e.kind, e.index) for e in seen] == [
                ("removed", old_index),
                ("added", new_index),
            ]
            lab.peer_send(link, GROUP, PORT, b"new-card\n")
            assert (await receive_until(sub, b"new-card\n"))[-1].interface == "eth1"

    in_lab(lab, main)


@pytest.mark.linux_profile(
    reason="an IPv6 group wider than the link: refused on Linux's portable path"
)
def test_tentative_ipv6_address_waits_for_dad(lab: Lab) -> None:
    link = lab.link[1]

    async def main() -> None:
        async with MulticastEndpoint(GROUP6, PORT) as ep:
            sub = ep.subscribe()
            lab.sh(lab.host, f"sysctl -qw net.ipv6.conf.{link.host_if}.accept_dad=1")
            lab.sh(lab.host, f"ip -6 addr del {link.host_addr6}/64 dev {link.host_if}")
            # Only a link-local address left: not enough for a site-scope group.
            await wait_for(lambda: "eth1" not in names(ep), what="eth1 dropped")
            lab.sh(lab.host, f"ip -6 addr add fd00:1::99/64 dev {link.host_if}")
            state = lab.sh(lab.host, f"ip -6 addr show dev {link.host_if}").stdout
            assert "tentative" in state  # DAD takes about a second
            snapshot = {i.name: i for i in read_snapshot()}
            assert "fd00:1::99" not in snapshot["eth1"].addresses(socket.AF_INET6)
            await asyncio.sleep(0.1)
            assert "eth1" not in names(ep)
            await wait_for(lambda: "eth1" in names(ep), what="eth1 after DAD")
            assert "tentative" not in lab.sh(lab.host, f"ip -6 addr show dev {link.host_if}").stdout
            lab.peer_send(link, GROUP6, PORT, b"v6\n")
            assert (await receive_until(sub, b"v6\n"))[-1].interface == "eth1"

    in_lab(lab, main)


def test_idle_watching_endpoint_uses_no_cpu(lab: Lab) -> None:
    async def main() -> None:
        async with MulticastEndpoint(GROUP, PORT):
            await asyncio.sleep(0.1)
            before = time.process_time()
            await asyncio.sleep(0.5)
            used = time.process_time() - before
            assert used < 0.05, f"idle endpoint used {used:.3f}s of CPU in 0.5s"

    in_lab(lab, main)


def test_polling_fallback_follows_a_new_link(lab: Lab, no_warnings: None) -> None:
    async def main() -> None:
        async with MulticastEndpoint(GROUP, PORT, netlink=False, poll_interval=0.05) as ep:
            assert ep.watch_mode == "poll"
            sub = ep.subscribe()
            new = lab.add_link()
            await wait_for(lambda: "eth3" in names(ep), what="eth3 joined by polling")
            lab.peer_send(new, GROUP, PORT, b"polled\n")
            assert (await receive_until(sub, b"polled\n"))[-1].interface == "eth3"

    in_lab(lab, main)


def ip_batch(lab: Lab, commands: str) -> None:
    """Many ``ip`` commands in one process, so their notifications come in one burst."""
    subprocess.run(
        ["ip", "netns", "exec", lab.host, "ip", "-batch", "-"],
        input=commands,
        text=True,
        check=True,
    )


@pytest.mark.linux_profile(reason="netlink itself")
def test_lost_netlink_events_lead_to_a_full_reread(
    lab: Lab, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mcastio")
    batch = "\n".join(f"address add 10.77.{i // 250}.{i % 250 + 1}/32 dev lo" for i in range(400))

    async def main() -> None:
        async with MulticastEndpoint(GROUP, PORT) as ep:
            watcher = ep._engine.watcher
            assert watcher is not None
            assert watcher._sock is not None
            # The smallest buffer the kernel allows, so a burst must overflow it.
            watcher._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 0)
            # The loop is blocked meanwhile, so nothing is read until the burst is over.
            ip_batch(lab, batch)
            new = lab.add_link()
            await wait_for(lambda: "eth3" in names(ep), what="eth3 after the overflow")
            assert "notifications were lost" in caplog.text
            sub = ep.subscribe()
            lab.peer_send(new, GROUP, PORT, b"recovered\n")
            assert (await receive_until(sub, b"recovered\n"))[-1].interface == "eth3"

    in_lab(lab, main)


def test_watching_endpoint_waits_for_a_first_interface(
    make_lab: Callable[..., Lab], caplog: pytest.LogCaptureFixture
) -> None:
    lab = make_lab(links=1, ipv6=False)
    lab.sh(lab.host, "ip link set eth0 down")

    async def main() -> None:
        async with MulticastEndpoint(GROUP, PORT) as ep:
            assert ep.interfaces == ()
            assert "eth0: down" in caplog.text
            sub = ep.subscribe()
            lab.sh(lab.host, "ip link set eth0 up")
            await wait_for(lambda: names(ep) == {"eth0"}, what="eth0 joined once up")
            lab.peer_send(lab.link[0], GROUP, PORT, b"first\n")
            assert (await receive_until(sub, b"first\n"))[-1].interface == "eth0"

    caplog.set_level(logging.WARNING, logger="mcastio")
    in_lab(lab, main)
