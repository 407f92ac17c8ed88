"""Batch receive API, the protocol batch hook, receive_buffer and uvloop, on real kernels.

Datagrams come from real peers (socat in the peer namespaces); no timing
assertions, only waits on conditions with deadlines.
"""

from __future__ import annotations

import asyncio
import importlib.util
import socket
import time
from collections.abc import Callable

import pytest

import mcastio
from mcastio import Datagram, MulticastEndpoint, MulticastProtocol
from mcastio.testing import Lab, LabError
from tests.conftest import run, skip_or_fail

GROUP = "239.255.42.7"
PORT = 5407

# Every test runs with each receive drain (compiled, recvmmsg and recvmsg).
pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("receive_drain")]


async def wait_until(cond: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def test_batches_deliver_every_datagram_to_each_independent_reader(lab: Lab) -> None:
    async def main() -> None:
        async with MulticastEndpoint(GROUP, PORT) as ep:
            first, second = ep.batches(), ep.batches()
            for i in range(3):
                lab.peer_send(lab.link[1], GROUP, PORT, f"a{i}".encode())
            lab.peer_send(lab.link[2], GROUP, PORT, b"b0")
            await wait_until(lambda: ep.stats.received == 4, "4 datagrams")
            for reader in (first, second):
                got: list[Datagram] = []
                while len(got) < 4:
                    batch = await reader.__anext__()
                    assert batch, "batches are never empty"
                    assert all(isinstance(d, Datagram) for d in batch)
                    got.extend(batch)
                assert [d.data for d in got if d.interface == "eth1"] == [b"a0", b"a1", b"a2"]
                assert [(d.data, d.interface) for d in got if d.data == b"b0"] == [(b"b0", "eth2")]
                assert {d.source[0] for d in got} == {lab.link[1].peer_addr, lab.link[2].peer_addr}
                assert all(d.group == GROUP for d in got)
                assert reader.dropped == 0
            first.close()
            second.close()

    with lab.inside():
        run(main())


def test_batches_drop_the_oldest_and_count_them(lab: Lab) -> None:
    async def main() -> None:
        async with MulticastEndpoint(GROUP, PORT, interfaces=["eth1"]) as ep:
            batches = ep.batches(queue_size=3)
            for i in range(6):
                lab.peer_send(lab.link[1], GROUP, PORT, b"%d" % i)
            await wait_until(lambda: ep.stats.received == 6, "6 datagrams")
            assert batches.queued == 3
            batch = await batches.__anext__()
            assert [d.data for d in batch] == [b"3", b"4", b"5"]
            assert batches.dropped == 3
            assert ep.stats.dropped == 3

    with lab.inside():
        run(main())


def test_max_batch_splits_and_close_ends_iteration(lab: Lab) -> None:
    async def main() -> None:
        async with MulticastEndpoint(GROUP, PORT, interfaces=["eth1"]) as ep:
            with pytest.raises(ValueError, match="max_batch must be a positive"):
                ep.batches(max_batch=0)
            batches = ep.batches(max_batch=2)
            for i in range(5):
                lab.peer_send(lab.link[1], GROUP, PORT, b"%d" % i)
            await wait_until(lambda: ep.stats.received == 5, "5 datagrams")
            sizes = [len(await batches.__anext__()) for _ in range(3)]
            assert sizes == [2, 2, 1]
            pending = asyncio.ensure_future(batches.__anext__())
            await asyncio.sleep(0)
            batches.close()
            with pytest.raises(StopAsyncIteration):
                await pending
        # A reader made before the endpoint closes ends with it.
        assert [b async for b in batches] == []

    with lab.inside():
        run(main())


def test_batches_end_when_the_endpoint_closes(lab: Lab) -> None:
    async def main() -> None:
        ep = MulticastEndpoint(GROUP, PORT, interfaces=["eth1"])
        await ep.start()
        batches = ep.batches()

        async def consume() -> list[list[Datagram]]:
            return [b async for b in batches]

        task = asyncio.ensure_future(consume())
        lab.peer_send(lab.link[1], GROUP, PORT, b"x")
        await wait_until(lambda: ep.stats.received == 1, "1 datagram")
        await asyncio.sleep(0)
        await ep.aclose()
        got = await task
        assert [[d.data for d in b] for b in got] == [[b"x"]]
        assert batches.closed
        with pytest.raises(mcastio.EndpointClosedError):
            ep.batches()

    with lab.inside():
        run(main())


class BatchCollector(MulticastProtocol):
    def __init__(self) -> None:
        self.calls: list[list[Datagram]] = []

    def datagrams_received(self, batch: list[Datagram]) -> None:
        self.calls.append(batch)


class PerDatagram(MulticastProtocol):
    def __init__(self) -> None:
        self.seen: list[tuple[bytes, str]] = []

    def multicast_datagram_received(self, dgram: Datagram) -> None:
        self.seen.append((dgram.data, dgram.interface))


def test_protocol_batch_hook_and_its_default(lab: Lab) -> None:
    async def main() -> None:
        t1, batching = await mcastio.create_multicast_endpoint(BatchCollector, GROUP, PORT)
        t2, single = await mcastio.create_multicast_endpoint(PerDatagram, GROUP, PORT)
        try:
            for i in range(3):
                lab.peer_send(lab.link[0], GROUP, PORT, b"p%d" % i)
            await wait_until(lambda: len(single.seen) == 3, "3 datagrams on the default hook")
            await wait_until(
                lambda: sum(map(len, batching.calls)) == 3, "3 datagrams on the batch hook"
            )
            assert all(batch for batch in batching.calls)
            assert [d.data for b in batching.calls for d in b] == [b"p0", b"p1", b"p2"]
            assert single.seen == [(b"p0", "eth0"), (b"p1", "eth0"), (b"p2", "eth0")]
        finally:
            t1.close()
            t2.close()
            await asyncio.sleep(0.05)
            assert t1.endpoint.closed
            assert t2.endpoint.closed

    with lab.inside():
        run(main())


def test_unicast_to_the_port_never_reaches_the_receive_socket(lab: Lab) -> None:
    async def main() -> None:
        async with MulticastEndpoint(GROUP, PORT, interfaces=["eth1"]) as ep:
            batches = ep.batches()
            # The receive socket is bound to the group address, so unicast to the
            # port finds no socket here at all (it would go to a wildcard-bound one).
            for _ in range(2):
                lab.peer_send(lab.link[1], lab.link[1].host_addr, PORT, b"unicast")
            lab.peer_send(lab.link[1], GROUP, PORT, b"group")
            await wait_until(lambda: ep.stats.received == 1, "the group datagram")
            assert ep.stats.not_for_group == 0
            batch = await batches.__anext__()
            assert [(d.data, d.interface) for d in batch] == [(b"group", "eth1")]

    with lab.inside():
        run(main())


def _sysctl(name: str) -> int:
    with open(f"/proc/sys/net/core/{name}", encoding="ascii") as f:
        return int(f.read())


def test_receive_buffer_sets_so_rcvbuf(lab: Lab) -> None:
    rmem_max, rmem_default = _sysctl("rmem_max"), _sysctl("rmem_default")

    async def main() -> None:
        for requested in (300_000, None):
            async with MulticastEndpoint(
                GROUP, PORT, interfaces=["eth1"], receive_buffer=requested
            ) as ep:
                sock = ep._engine.memberships.sockets[0]
                got = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
                # The kernel doubles the request for its bookkeeping, capped at rmem_max.
                expected = 2 * min(requested, rmem_max) if requested else rmem_default
                assert got == expected
        with pytest.raises(ValueError, match="receive_buffer"):
            MulticastEndpoint(GROUP, PORT, receive_buffer=0)

    with lab.inside():
        run(main())


def test_send_all_results_stay_correct_with_shared_values(lab: Lab) -> None:
    async def main() -> None:
        async with MulticastEndpoint(GROUP, PORT) as ep:
            listeners = [lab.peer_listen(link, GROUP, PORT) for link in lab.link]
            first = await ep.send_all(b"one\n")
            second = ep.send_all_nowait(b"two\n")
            third = ep.send_all_nowait(bytearray(b"three\n"))
            await asyncio.sleep(0.2)
            for results, size in ((first, 4), (second, 4), (third, 6)):
                assert [r.interface for r in results] == ["eth0", "eth1", "eth2"]
                assert all(r.ok and r.sent == size for r in results)
                assert results == tuple(mcastio.SendResult(f"eth{i}", None, size) for i in range(3))
            for listener in listeners:
                assert listener.lines() == [b"one", b"two", b"three"]

    with lab.inside():
        run(main())


HAVE_UVLOOP = importlib.util.find_spec("uvloop") is not None
if HAVE_UVLOOP:
    import uvloop

    # uvloop opens one process-wide pipe with its first loop and keeps it; open it
    # here so the leak guard does not count it against the uvloop test.
    uvloop.new_event_loop().close()


@pytest.mark.skipif(
    not HAVE_UVLOOP,
    reason="uvloop is not installed (pip install -e '.[test]')",
)
def test_endpoint_runs_on_uvloop(lab: Lab) -> None:
    async def main() -> None:
        assert type(asyncio.get_running_loop()).__module__.startswith("uvloop")
        async with MulticastEndpoint(GROUP, PORT) as ep:
            listener = lab.peer_listen(lab.link[2], GROUP, PORT)
            sub, batches = ep.subscribe(), ep.batches()
            lab.peer_send(lab.link[1], GROUP, PORT, b"on uvloop")
            dgram = await asyncio.wait_for(sub.__anext__(), 5)
            assert (dgram.data, dgram.interface) == (b"on uvloop", "eth1")
            batch = await asyncio.wait_for(batches.__anext__(), 5)
            assert [d.data for d in batch] == [b"on uvloop"]
            results = await ep.send_all(b"back\n")
            assert all(r.ok for r in results)
            await asyncio.sleep(0.2)
            assert listener.lines() == [b"back"]

    loop = uvloop.new_event_loop()
    with lab.inside():
        try:
            loop.run_until_complete(asyncio.wait_for(main(), 30))
        finally:
            loop.close()


def slow_down_eth1(lab: Lab) -> None:
    """A slow qdisc keeps eth1's datagrams charged to its socket, so a minimal send
    buffer fills after a couple of sends and sendto fails with EAGAIN."""
    try:
        lab.sh(lab.host, "tc qdisc add dev eth1 root tbf rate 400kbit burst 1600 latency 2s")
    except LabError as exc:
        skip_or_fail(f"the tbf qdisc is not available here: {exc}")


def test_send_all_waits_out_a_full_buffer_without_holding_up_the_others(lab: Lab) -> None:
    slow_down_eth1(lab)
    payload = b"x" * 1400

    async def main() -> None:
        # A socket per interface (the group's port): one link's full buffer is its own.
        async with MulticastEndpoint(GROUP, PORT, source_port="group") as ep:
            index = socket.if_nametoindex("eth1")
            ep._engine.tx._senders[index].tx.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1)
            blocked = None
            for _ in range(50):
                results = ep.send_all_nowait(payload)
                by_name = {r.interface: r for r in results}
                if isinstance(by_name["eth1"].error, BlockingIOError):
                    blocked = by_name
                    break
            assert blocked is not None, "eth1's send buffer never filled"
            # The copies after the blocked interface went out all the same.
            assert blocked["eth0"].ok
            assert blocked["eth2"].ok
            results = await ep.send_all(payload)
            assert [r.interface for r in results] == ["eth0", "eth1", "eth2"]
            assert all(r.ok and r.sent == len(payload) for r in results), results

    with lab.inside():
        run(main())


def test_one_socket_for_every_link_waits_out_a_slow_one(lab: Lab) -> None:
    slow_down_eth1(lab)
    payload = b"z" * 1400

    async def main() -> None:
        # A port of its own: one socket for every interface, and so one send buffer.
        async with MulticastEndpoint(GROUP, PORT) as ep:
            (tx,) = ep._engine.tx.sockets
            tx.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1)
            for _ in range(50):
                results = ep.send_all_nowait(payload)
                if any(isinstance(r.error, BlockingIOError) for r in results):
                    break
            else:
                pytest.fail("the send buffer never filled")
            # eth1's queue holds the buffer: the awaitable send waits for it to drain,
            # then every interface has its copy.
            results = await ep.send_all(payload)
            assert [r.interface for r in results] == ["eth0", "eth1", "eth2"]
            assert all(r.ok and r.sent == len(payload) for r in results), results

    with lab.inside():
        run(main())


def test_concurrent_sends_share_the_wait_for_a_full_buffer(lab: Lab) -> None:
    slow_down_eth1(lab)
    payload = b"y" * 1400

    async def main() -> None:
        async with MulticastEndpoint(GROUP, PORT) as ep:
            index = socket.if_nametoindex("eth1")
            ep._engine.tx._senders[index].tx.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1)
            for _ in range(50):
                if isinstance(ep.send_nowait(payload, interface="eth1").error, BlockingIOError):
                    break
            else:
                pytest.fail("eth1's send buffer never filled")
            # asyncio allows one writer callback per descriptor: both waits must end.
            first, second = await asyncio.gather(
                ep.send(payload, interface="eth1"), ep.send(payload, interface="eth1")
            )
            assert first.ok
            assert second.ok

    with lab.inside():
        run(main())
