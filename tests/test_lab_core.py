"""The core endpoint on a real multi-homed host built from network namespaces."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import struct
import subprocess
import time
from collections.abc import Callable

import pytest

import mcastio
from mcastio.testing import Lab
from tests.conftest import run

# Every test runs on the compiled path and the pure one (recvmmsg; the recvmsg drain
# runs in the other receive tests): real peers take long, a third run finds nothing new.
pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("receive_path")]

GROUP = "239.255.10.1"
PORT = 5700


async def collect(
    sub: mcastio.Subscription, count: int, timeout: float = 3.0
) -> list[mcastio.Datagram]:
    got: list[mcastio.Datagram] = []

    async def take() -> None:
        async for dgram in sub:
            got.append(dgram)
            if len(got) >= count:
                return

    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(take(), timeout)
    return got


async def quiet(sub: mcastio.Subscription, wait: float = 0.3) -> list[mcastio.Datagram]:
    """Whatever arrives within ``wait`` seconds; used to prove that nothing does."""
    await asyncio.sleep(wait)
    return await collect(sub, 10**6, timeout=0.01) if sub.queued else []


def peers_send_each(lab: Lab, group: str = GROUP, port: int = PORT) -> None:
    for link in lab.link:
        lab.peer_send(link, group, port, f"from-{link.index}\n".encode())


# -- the article's two traps, reproduced with plain sockets ---------------------------


def test_trap_join_with_inaddr_any_receives_one_link_only(lab: Lab) -> None:
    with lab.inside():
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("0.0.0.0", PORT))
        mreq = socket.inet_aton(GROUP) + socket.inet_aton("0.0.0.0")
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
        sock.settimeout(0.5)
        peers_send_each(lab)
        got = []
        while True:
            try:
                got.append(sock.recvfrom(100)[0])
            except TimeoutError:
                break
    # The kernel picked the default-route link; the other two links are silently lost.
    assert got == [b"from-0\n"]


def test_trap_plain_send_leaves_by_default_route_only(lab: Lab) -> None:
    listeners = [lab.peer_listen(link, GROUP, PORT) for link in lab.link]
    with lab.inside():
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
        sock.sendto(b"naive\n", (GROUP, PORT))
    time.sleep(0.3)
    received = [listener.lines() for listener in listeners]
    assert received == [[b"naive"], [], []]


# -- mcastio on the same host ----------------------------------------------------------


def test_receives_from_every_link_attributed_to_its_interface(lab: Lab) -> None:
    async def main() -> list[mcastio.Datagram]:
        async with mcastio.MulticastEndpoint(GROUP, PORT) as ep:
            assert [i.name for i in ep.interfaces] == ["eth0", "eth1", "eth2"]
            sub = ep.subscribe()
            await asyncio.to_thread(peers_send_each, lab)
            return await collect(sub, 3)

    with lab.inside():
        got = run(main())
    by_if = {d.interface: d for d in got}
    assert sorted(by_if) == ["eth0", "eth1", "eth2"]
    for link in lab.link:
        dgram = by_if[link.host_if]
        assert dgram.data == f"from-{link.index}\n".encode()
        assert dgram.source[0] == link.peer_addr
        assert dgram.group == GROUP
    assert len(got) == 3


def test_send_all_gives_each_peer_exactly_one_copy(lab: Lab) -> None:
    listeners = [lab.peer_listen(link, GROUP, PORT) for link in lab.link]

    async def main() -> tuple[mcastio.SendResult, ...]:
        async with mcastio.MulticastEndpoint(GROUP, PORT) as ep:
            results = await ep.send_all(b"hello\n")
            await asyncio.sleep(0.3)
            return results

    with lab.inside():
        results = run(main())
    assert [(r.interface, r.ok, r.sent) for r in results] == [
        ("eth0", True, 6),
        ("eth1", True, 6),
        ("eth2", True, 6),
    ]
    assert [listener.lines() for listener in listeners] == [[b"hello"]] * 3


@pytest.mark.usefixtures("need_tcpdump")
def test_each_copy_leaves_with_its_interfaces_source_address(lab: Lab) -> None:
    bpf = f"udp and dst host {GROUP} and dst port {PORT}"
    dumps = [lab.tcpdump(link.peer_ns, link.peer_if, bpf, count=1) for link in lab.link]

    async def main() -> None:
        async with mcastio.MulticastEndpoint(GROUP, PORT) as ep:
            await ep.send_all(b"src-check")

    with lab.inside():
        run(main())
    for link, proc in zip(lab.link, dumps, strict=True):
        out, _ = proc.communicate(timeout=5)
        line = out.decode()
        assert re.search(
            rf"IP {re.escape(link.host_addr)}\.\d+ > {re.escape(GROUP)}\.{PORT}:", line
        ), line


def test_send_on_one_named_interface(lab: Lab) -> None:
    listeners = [lab.peer_listen(link, GROUP, PORT) for link in lab.link]

    async def main() -> None:
        async with mcastio.MulticastEndpoint(GROUP, PORT) as ep:
            result = await ep.send(b"only-eth1\n", interface="eth1")
            assert result.ok
            assert result.interface == "eth1"
            with pytest.raises(
                ValueError, match="'wlan7' is not one of this endpoint's interfaces"
            ):
                await ep.send(b"x", interface="wlan7")
            await asyncio.sleep(0.3)

    with lab.inside():
        run(main())
    assert [listener.lines() for listener in listeners] == [[], [b"only-eth1"], []]


def test_other_group_same_port_and_unicast_are_not_delivered(lab: Lab) -> None:
    other = "239.255.10.2"

    async def main() -> tuple[list[mcastio.Datagram], mcastio.EndpointStats, list[bytes]]:
        # Another program on this host joins a different group on the same port;
        # with the kernel default (IP_MULTICAST_ALL=1) its traffic would leak to us.
        neighbour = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with neighbour:
            neighbour.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            neighbour.bind(("0.0.0.0", PORT))
            mreqn = struct.pack(
                "=4s4si", socket.inet_aton(other), bytes(4), socket.if_nametoindex("eth1")
            )
            neighbour.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
            async with mcastio.MulticastEndpoint(GROUP, PORT) as ep:
                sub = ep.subscribe()
                link = lab.link[1]
                await asyncio.to_thread(lab.peer_send, link, other, PORT, b"other-group\n")
                await asyncio.to_thread(
                    lab.run,
                    link.peer_ns,
                    "sh",
                    "-c",
                    f"echo unicast | socat -u - UDP4-DATAGRAM:{link.host_addr}:{PORT}",
                )
                await asyncio.to_thread(lab.peer_send, link, GROUP, PORT, b"ours\n")
                got = await collect(sub, 5, timeout=1.0)
                neighbour.setblocking(False)
                theirs = []
                with contextlib.suppress(BlockingIOError):
                    while True:
                        theirs.append(neighbour.recv(100))
                return got, ep.stats, theirs

    with lab.inside():
        got, stats, theirs = run(main())
    assert [d.data for d in got] == [b"ours\n"]
    assert stats.received == 1
    # The receive socket is bound to the group: the unicast never reached it, and
    # went to the program bound to the wildcard address.
    assert stats.not_for_group == 0
    assert b"unicast\n" in theirs


def test_coexists_with_another_program_on_the_same_port(lab: Lab) -> None:
    # socat in the host namespace binds the same port and joins on eth2 only.
    host_listener = lab.popen(
        lab.host,
        "socat",
        "-u",
        f"UDP4-RECV:{PORT},ip-add-membership={GROUP}:eth2,reuseaddr",
        "STDOUT",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    lab.wait_for_membership(lab.host, "eth2", GROUP, host_listener)

    async def main() -> list[mcastio.Datagram]:
        async with mcastio.MulticastEndpoint(GROUP, PORT) as ep:
            sub = ep.subscribe()
            await asyncio.to_thread(lab.peer_send, lab.link[2], GROUP, PORT, b"shared\n")
            return await collect(sub, 1)

    with lab.inside():
        got = run(main())
    assert [(d.data, d.interface) for d in got] == [(b"shared\n", "eth2")]
    host_listener.kill()
    out, _ = host_listener.communicate(timeout=5)
    assert out == b"shared\n"


def test_more_memberships_than_one_socket_may_hold(make_lab: Callable[..., Lab]) -> None:
    # 22 links at the kernel default cap of 20 memberships per socket.
    lab = make_lab(links=22, ipv6=False)
    limit = int(lab.run(lab.host, "sysctl", "-n", "net.ipv4.igmp_max_memberships").stdout)
    assert limit < len(lab.link)

    async def main() -> tuple[list[mcastio.Datagram], int]:
        async with mcastio.MulticastEndpoint(GROUP, PORT) as ep:
            assert len(ep.interfaces) == 22
            sub = ep.subscribe()
            await asyncio.to_thread(peers_send_each, lab)
            got = await collect(sub, 22, timeout=5)
            got += await quiet(sub)
            return got, len(ep._engine.memberships.sockets)

    with lab.inside():
        got, receivers = run(main(), timeout=60)
    assert receivers == 2
    assert sorted(d.interface for d in got) == sorted(link.host_if for link in lab.link)
    assert len(got) == 22


def test_every_subscriber_is_independent_and_slow_ones_drop_oldest(lab: Lab) -> None:
    async def main() -> None:
        async with mcastio.MulticastEndpoint(GROUP, PORT, queue_size=4) as ep:
            fast = ep.subscribe()
            slow = ep.subscribe(queue_size=2)
            link = lab.link[1]
            for n in range(6):
                await asyncio.to_thread(lab.peer_send, link, GROUP, PORT, f"{n}\n".encode())
                assert [d.data for d in await collect(fast, 1)] == [f"{n}\n".encode()]
            # The slow subscriber never read: it holds only the newest two.
            assert slow.queued == 2
            assert slow.dropped == 4
            assert [d.data for d in await collect(slow, 2)] == [b"4\n", b"5\n"]
            assert fast.dropped == 0
            assert ep.stats.dropped == 4

    with lab.inside():
        run(main())


def test_close_ends_iterators_and_is_idempotent(lab: Lab) -> None:
    async def main() -> None:
        ep = mcastio.MulticastEndpoint(GROUP, PORT)
        await ep.start()
        ended = asyncio.Event()

        async def consume() -> None:
            async for _ in ep:
                pass
            ended.set()

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.05)
        await ep.aclose()
        await asyncio.wait_for(ended.wait(), 1)
        await task
        await ep.aclose()
        assert ep.closed
        with pytest.raises(mcastio.EndpointClosedError):
            await ep.send_all(b"late")
        with pytest.raises(mcastio.EndpointClosedError):
            ep.subscribe()
        with pytest.raises(mcastio.EndpointClosedError):
            await ep.start()

    with lab.inside():
        run(main())


def test_bad_input_raises_actionable_value_errors(lab: Lab) -> None:
    async def main() -> None:
        with pytest.raises(ValueError, match="not a multicast address"):
            mcastio.MulticastEndpoint("10.200.0.2", PORT)
        with pytest.raises(ValueError, match="port must be an integer"):
            mcastio.MulticastEndpoint(GROUP, 70000)
        ep = mcastio.MulticastEndpoint(GROUP, PORT, interfaces=["eth1", "wlan0"])
        with pytest.raises(ValueError, match=r"unknown interface name\(s\) 'wlan0'"):
            await ep.start()
        await ep.aclose()
        async with mcastio.MulticastEndpoint(GROUP, PORT, interfaces=["eth1"]) as ep:
            assert [i.name for i in ep.interfaces] == ["eth1"]
            with pytest.raises(ValueError, match="65508 bytes exceeds the UDP maximum of 65507"):
                await ep.send_all(bytes(65508))
            results = await ep.send_all(bytes(65507))
            assert [r.ok for r in results] == [True]

    with lab.inside():
        run(main())


def test_no_eligible_interface_is_a_clear_error(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(links=1, ipv6=False)
    lab.sh(lab.host, "ip link set eth0 down")

    async def main() -> None:
        with pytest.raises(
            mcastio.MulticastError, match=r"(?s)no interface can carry .*eth0: down"
        ):
            # A watching endpoint waits for an interface instead (test_watch_lab.py).
            async with mcastio.MulticastEndpoint(GROUP, PORT, watch=False):
                pass

    with lab.inside():
        run(main())


def test_protocol_entry_plugs_in_a_datagram_protocol(lab: Lab) -> None:
    listeners = [lab.peer_listen(link, GROUP, PORT) for link in lab.link]

    class Echo(asyncio.DatagramProtocol):
        def __init__(self) -> None:
            self.got: list[tuple[bytes, tuple[str, int]]] = []
            self.lost = asyncio.Event()

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            self.got.append((data, addr))

        def connection_lost(self, exc: Exception | None) -> None:
            self.lost.set()

    async def main() -> Echo:
        transport, proto = await mcastio.create_multicast_endpoint(Echo, GROUP, PORT)
        results = transport.send_all(b"proto\n")
        assert [r.ok for r in results] == [True, True, True]
        transport.sendto(b"sendto\n")
        await asyncio.to_thread(peers_send_each, lab)
        for _ in range(100):
            if len(proto.got) >= 3:
                break
            await asyncio.sleep(0.02)
        transport.close()
        assert transport.is_closing()
        await asyncio.wait_for(proto.lost.wait(), 2)
        return proto

    with lab.inside():
        proto = run(main())
    assert sorted(addr[0] for _, addr in proto.got) == [link.peer_addr for link in lab.link]
    # Each peer's listener also hears its own peer's send (loopback inside the peer).
    expected = [[b"proto", b"sendto", f"from-{link.index}".encode()] for link in lab.link]
    assert [listener.lines() for listener in listeners] == expected


def test_protocol_entry_passes_endpoint_options_through(lab: Lab) -> None:
    async def main() -> tuple[str, str, list[str]]:
        transport, _ = await mcastio.create_multicast_endpoint(
            asyncio.DatagramProtocol, GROUP, PORT, interfaces=["eth2"], watch=False
        )
        try:
            off = transport.endpoint.watch_mode
            names = [i.name for i in transport.endpoint.interfaces]
        finally:
            transport.close()
        watched, _ = await mcastio.create_multicast_endpoint(
            asyncio.DatagramProtocol, GROUP, PORT, netlink=False, poll_interval=5
        )
        try:
            polling = watched.endpoint.watch_mode
        finally:
            watched.close()
        await asyncio.sleep(0.05)
        return off, polling, names

    with lab.inside():
        assert run(main()) == ("off", "poll", ["eth2"])


def test_abandoned_iterators_are_released_and_drops_stay_counted(lab: Lab) -> None:
    async def main() -> None:
        async with mcastio.MulticastEndpoint(GROUP, PORT, queue_size=1) as ep:
            link = lab.link[1]
            for n in range(3):
                abandoned = aiter(ep)  # what "async for dgram in ep" makes
                await asyncio.to_thread(lab.peer_send, link, GROUP, PORT, f"{n}\n".encode())
                async for _ in abandoned:
                    break
                del abandoned
            kept = ep.subscribe()
            for n in range(3):
                await asyncio.to_thread(lab.peer_send, link, GROUP, PORT, f"x{n}\n".encode())
            await collect(kept, 10, timeout=0.3)
            # Only the live subscription is still fed; the abandoned ones are gone.
            assert len(ep._engine.receive.sinks) == 1
            dropped = ep.stats.dropped
        assert dropped >= 1
        assert ep.stats.dropped == dropped  # closing does not forget drops

    with lab.inside():
        run(main())


def test_two_tasks_cannot_share_one_subscription(lab: Lab) -> None:
    async def main() -> None:
        async with mcastio.MulticastEndpoint(GROUP, PORT) as ep:
            sub = ep.subscribe()
            first = asyncio.create_task(sub.__anext__())
            await asyncio.sleep(0)
            with pytest.raises(RuntimeError, match="already reading"):
                await sub.__anext__()
            sub.close()
            with pytest.raises(StopAsyncIteration):
                await first

    with lab.inside():
        run(main())


def test_a_raising_protocol_does_not_starve_subscriptions(lab: Lab) -> None:
    class Broken(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            raise RuntimeError("application bug")

    async def main() -> list[bytes]:
        loop = asyncio.get_running_loop()
        reported: list[BaseException | None] = []
        loop.set_exception_handler(lambda _loop, ctx: reported.append(ctx.get("exception")))
        transport, _ = await mcastio.create_multicast_endpoint(Broken, GROUP, PORT)
        try:
            sub = transport.endpoint.subscribe()
            await asyncio.to_thread(lab.peer_send, lab.link[2], GROUP, PORT, b"still here\n")
            got = await collect(sub, 1)
        finally:
            transport.close()
            await asyncio.sleep(0.05)
        assert any(isinstance(exc, RuntimeError) for exc in reported)
        return [d.data for d in got]

    with lab.inside():
        assert run(main()) == [b"still here\n"]
