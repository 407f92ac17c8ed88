"""The receive fast path against real peers: every drain, every size, truncation, coalescing."""

from __future__ import annotations

import asyncio
import errno
import socket

import pytest

import mcastio
from mcastio import _net, _receive
from mcastio._platform.linux import mmsg as _mmsg
from mcastio.testing import Lab
from tests.conftest import run
from tests.test_receive_lab import peer_socket, take
from tests.test_replies_lab import peer_responder

# Every test runs with each receive drain (compiled, recvmmsg and recvmsg).
pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("receive_drain")]

GROUP4 = "239.255.13.1"
GROUP6 = "ff05::1:13"
PORT = 5730
SIZES = (1, 64, 1400, 8000, 65000)


class RefusingDrain:
    """A compiled drain whose recvmmsg the kernel refuses, as the C one reports it."""

    def __init__(self, *args: object) -> None:
        pass

    def read(
        self, fd: int, reply: bool, budget: int
    ) -> tuple[list[mcastio.Datagram], int, int, int, int, int]:
        return [], 0, 0, 0, -1, errno.ENOSYS

    def set_names(self, names: dict[int, str]) -> None:
        pass

    def set_groups(self, groups: dict[bytes, str]) -> None:
        pass


def readers_of(ep: mcastio.MulticastEndpoint) -> int:
    """Reads the endpoint made after a coalescing delay, over all its sockets."""
    return sum(r.deferred_reads for r in ep._engine._socket_readers.values())


@pytest.mark.parametrize(("group", "family"), [(GROUP4, socket.AF_INET), (GROUP6, socket.AF_INET6)])
def test_every_size_from_every_link_arrives_whole_and_attributed(
    lab: Lab, receive_drain: str, group: str, family: socket.AddressFamily
) -> None:
    if family == socket.AF_INET6:
        lab.wait_ipv6_ready(lab.link)
    expected = {
        (link.host_if, size, bytes([i]) * size) for i, link in enumerate(lab.link) for size in SIZES
    }

    async def main() -> tuple[set[tuple[str, int, bytes]], set[str], tuple[str, bool]]:
        async with mcastio.MulticastEndpoint(group, PORT, watch=False, receive_ttl=True) as ep:
            sub = ep.subscribe()
            sources: dict[str, str] = {}
            for i, link in enumerate(lab.link):
                with peer_socket(lab, link, family, 9) as sock:
                    for size in SIZES:
                        sock.sendto(bytes([i]) * size, (group, PORT))
                    sources[link.host_if] = sock.getsockname()[0]
            got = await asyncio.wait_for(take(sub, len(expected)), 5)
            assert {d.ttl for d in got} == {9}
            assert {d.group for d in got} == {ep.group}
            return (
                {(d.interface, len(d.data), d.data) for d in got},
                {str(d.source[0]) for d in got},
                (ep._engine.receive.path, ep._engine.receive.fast),
            )

    with lab.inside():
        got, sources, fast = run(main())
    assert fast == (receive_drain, receive_drain != "recvmsg")
    assert got == expected
    wanted = {link.peer_addr if family == socket.AF_INET else link.peer_addr6 for link in lab.link}
    # IPv6 peers may send from their link-local address: either is theirs.
    assert len(sources) == 3
    if family == socket.AF_INET:
        assert sources == wanted


def test_oversize_datagrams_are_counted_as_truncated(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_mmsg, "SLOT", 1024)
    monkeypatch.setattr(_net, "RECV_BUFSIZE", 1024)
    link = lab.link[0]

    async def main() -> tuple[list[int], mcastio.EndpointStats]:
        ep = mcastio.MulticastEndpoint(GROUP4, PORT, interfaces=[link.host_if], watch=False)
        async with ep:
            sub = ep.subscribe()
            with peer_socket(lab, link, socket.AF_INET, 1) as sock:
                for size in (100, 1023, 1025, 3000, 200):
                    sock.sendto(b"t" * size, (GROUP4, PORT))
            got = await asyncio.wait_for(take(sub, 3), 3)
            await asyncio.sleep(0.05)
            return [len(d.data) for d in got], ep.stats

    with lab.inside():
        sizes, stats = run(main())
    assert sizes == [100, 1023, 200]
    assert (stats.received, stats.truncated) == (3, 2)


@pytest.mark.parametrize("delay", [0.001, 0.0])
def test_a_flood_is_read_in_deferred_batches_unless_turned_off(lab: Lab, delay: float) -> None:
    link = lab.link[2]
    chunks, chunk = 6, 400

    async def main() -> tuple[int, int, int]:
        ep = mcastio.MulticastEndpoint(
            GROUP4, PORT, interfaces=[link.host_if], watch=False, coalesce_delay=delay
        )
        async with ep:
            batches = ep.batches(queue_size=chunks * chunk)
            with peer_socket(lab, link, socket.AF_INET, 1) as sock:
                for n in range(chunks):
                    for i in range(chunk):
                        sock.sendto((n * chunk + i).to_bytes(4, "big"), (GROUP4, PORT))
                    await asyncio.sleep(0.002)
            received = 0
            while received < chunks * chunk:
                batch = await asyncio.wait_for(batches.__anext__(), 3)
                assert [int.from_bytes(d.data, "big") for d in batch] == list(
                    range(received, received + len(batch))
                )
                received += len(batch)
            return received, readers_of(ep), ep.stats.kernel_dropped

    with lab.inside():
        received, deferred, kernel_dropped = run(main())
    assert (received, kernel_dropped) == (chunks * chunk, 0)
    if delay:
        assert deferred > 0
    else:
        assert deferred == 0


def test_light_traffic_is_read_at_once(lab: Lab) -> None:
    link = lab.link[0]

    async def main() -> tuple[int, int]:
        ep = mcastio.MulticastEndpoint(GROUP4, PORT, interfaces=[link.host_if], watch=False)
        async with ep:
            sub = ep.subscribe()
            with peer_socket(lab, link, socket.AF_INET, 1) as sock:
                for i in range(20):
                    sock.sendto(bytes([i]), (GROUP4, PORT))
                    dgram = await asyncio.wait_for(sub.__anext__(), 1)
                    assert dgram.data == bytes([i])
                    # 500 datagrams/s at most: light traffic, each read on arrival.
                    await asyncio.sleep(0.002)
            return ep.stats.received, readers_of(ep)

    with lab.inside():
        assert run(main()) == (20, 0)


def test_coalesce_delay_reaches_every_entry(lab: Lab) -> None:
    async def main() -> list[float]:
        transport, _ = await mcastio.create_multicast_endpoint(
            asyncio.DatagramProtocol, GROUP4, PORT, watch=False, coalesce_delay=0.0005
        )
        transport.close()
        await transport.endpoint.aclose()
        dual = mcastio.DualStackEndpoint(
            "224.0.0.251", "ff02::fb", PORT, watch=False, coalesce_delay=0
        )
        default = mcastio.MulticastEndpoint(GROUP6, PORT, watch=False)
        return [
            transport.endpoint._engine.options.coalesce_delay,
            dual._v4._engine.options.coalesce_delay,
            dual._v6._engine.options.coalesce_delay,
            default._engine.options.coalesce_delay,
        ]

    with lab.inside():
        assert run(main()) == [0.0005, 0.0, 0.0, 0.001]


def test_a_refused_recvmmsg_falls_back_to_recvmsg(
    lab: Lab, receive_drain: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(self: _mmsg.Buffers, fd: int) -> int:
        raise OSError(errno.ENOSYS, "Function not implemented")

    # What a seccomp sandbox that filters the system call makes recvmmsg return.
    monkeypatch.setattr(_mmsg.Buffers, "receive", refuse)
    monkeypatch.setattr(_receive, "_new_compiled", RefusingDrain)
    link = lab.link[1]

    async def main() -> tuple[list[bytes], bool]:
        ep = mcastio.MulticastEndpoint(GROUP4, PORT, interfaces=[link.host_if], watch=False)
        async with ep:
            sub = ep.subscribe()
            with peer_socket(lab, link, socket.AF_INET, 1) as sock:
                for i in range(3):
                    sock.sendto(bytes([i]), (GROUP4, PORT))
            got = await asyncio.wait_for(take(sub, 3), 3)
            return [d.data for d in got], ep._engine.receive.fast

    with lab.inside():
        data, fast = run(main())
    assert data == [b"\0", b"\1", b"\2"]
    assert not fast


def test_replies_use_the_same_drain_and_coalesce_under_a_flood(
    lab: Lab, receive_drain: str
) -> None:
    link = lab.link[1]
    responder = peer_responder(lab, link, GROUP4)
    count = 1200

    async def main() -> tuple[list[int], mcastio.EndpointStats, int, bool]:
        ep = mcastio.MulticastEndpoint(GROUP4, PORT, interfaces=[link.host_if], watch=False)
        async with ep:
            batches = ep.batches(queue_size=count)
            await ep.send_all(b"flood me")
            _, source = await asyncio.to_thread(responder.recvfrom, 2048)
            # Answers in bursts, as a busy responder would: faster than 8000/s, in
            # bursts the transmit socket's default buffer holds.
            for start in range(0, count, 100):
                for i in range(start, start + 100):
                    responder.sendto(i.to_bytes(4, "big"), source)
                await asyncio.sleep(0.002)
            got: list[int] = []
            while len(got) < count:
                batch = await asyncio.wait_for(batches.__anext__(), 3)
                assert {(d.group, d.interface) for d in batch} == {(None, link.host_if)}
                got += [int.from_bytes(d.data, "big") for d in batch]
            return got, ep.stats, readers_of(ep), ep._engine.receive.fast

    try:
        with lab.inside():
            got, stats, deferred, fast = run(main())
    finally:
        responder.close()
    assert fast == (receive_drain != "recvmsg")
    assert got == list(range(count))
    assert (stats.replies, stats.received) == (count, 0)
    assert deferred > 0
