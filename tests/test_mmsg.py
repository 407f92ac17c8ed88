"""The recvmmsg binding and the read pacing: pure parsing, loopback sockets, a socketpair.

Loopback only: the real kernel fills the buffers, nothing leaves this host.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable, Iterator

import pytest

from mcastio import _net
from mcastio._fastpath import Coalescing
from mcastio._options import validate_coalesce_delay
from mcastio._pacing import SocketReader
from mcastio._platform import linux
from mcastio._platform.linux import mmsg as _mmsg
from tests.conftest import run, skip_or_fail

SO_TIMESTAMP = getattr(socket, "SO_TIMESTAMP", 29)


@pytest.fixture(autouse=True)
def _need_recvmmsg() -> None:
    if not _mmsg.available():
        skip_or_fail("this libc has no recvmmsg")


def cmsg(level: int, kind: int, data: bytes) -> bytes:
    """One control message laid out with the C library's own CMSG_LEN/CMSG_SPACE."""
    head = struct.pack("@Nii", socket.CMSG_LEN(len(data)), level, kind)
    return (head + data).ljust(socket.CMSG_SPACE(len(data)), b"\0")


def in_pktinfo(ifindex: int, dst: str) -> bytes:
    return cmsg(
        socket.IPPROTO_IP,
        _net.IP_PKTINFO,
        struct.pack("@i4s4s", ifindex, b"\0" * 4, socket.inet_aton(dst)),
    )


def in6_pktinfo(ifindex: int, dst: str) -> bytes:
    packed = socket.inet_pton(socket.AF_INET6, dst)
    return cmsg(socket.IPPROTO_IPV6, _net.IPV6_PKTINFO, struct.pack("@16sI", packed, ifindex))


def ovfl(count: int) -> bytes:
    return cmsg(socket.SOL_SOCKET, linux.SO_RXQ_OVFL, struct.pack("@I", count))


# -- pure parsing ------------------------------------------------------------------


def test_control_alignment_matches_the_c_library() -> None:
    for size in (0, 1, 4, 12, 20, 64):
        assert len(cmsg(1, 1, b"x" * size)) == socket.CMSG_SPACE(size)
    assert socket.CMSG_SPACE(20) + 2 * socket.CMSG_SPACE(4) <= _mmsg.CONTROL_ROOM


def test_every_control_message_is_read_and_unknown_ones_skipped() -> None:
    block = (
        ovfl(17)
        + cmsg(socket.SOL_SOCKET, SO_TIMESTAMP, b"\1" * 16)
        + in_pktinfo(5, "239.1.2.3")
        + cmsg(socket.IPPROTO_IP, _net.IP_TTL, struct.pack("@i", 63))
        + cmsg(99, 1, b"??")
    )
    info = _mmsg.parse_control(block)
    assert (info.ifindex, info.destination, info.ttl, info.drops) == (
        5,
        socket.inet_aton("239.1.2.3"),
        63,
        17,
    )


def test_ipv6_pktinfo_and_hop_limit() -> None:
    block = in6_pktinfo(7, "ff02::fb") + cmsg(
        socket.IPPROTO_IPV6, _net.IPV6_HOPLIMIT, struct.pack("@i", 255)
    )
    info = _mmsg.parse_control(b"NAME" + block, 4)
    assert info.ifindex == 7
    assert info.destination == socket.inet_pton(socket.AF_INET6, "ff02::fb")
    assert (info.ttl, info.drops) == (255, None)


def test_a_truncated_or_empty_block_yields_what_is_whole() -> None:
    whole = in_pktinfo(3, "239.9.9.9")
    info = _mmsg.parse_control(whole + ovfl(4)[:-6])
    assert (info.ifindex, info.drops) == (3, None)
    empty = _mmsg.parse_control(b"")
    assert (empty.ifindex, empty.destination, empty.ttl, empty.drops) == (-1, None, None, None)


def test_split_drops_keeps_everything_but_the_counter() -> None:
    name = b"N" * 16
    rest = in_pktinfo(2, "239.1.1.1")
    assert _mmsg.split_drops(name + ovfl(9) + rest, 16) == (9, name + rest)
    assert _mmsg.split_drops(name + rest, 16) == (None, name + rest)


def test_sockaddr_tuples_match_what_recvmsg_gives() -> None:
    sin = struct.pack("@H", socket.AF_INET) + struct.pack(
        "!H4s", 5353, socket.inet_aton("10.0.0.7")
    )
    assert _mmsg.parse_sockaddr(sin.ljust(16, b"\0"), socket.AF_INET) == ("10.0.0.7", 5353)
    addr6 = socket.inet_pton(socket.AF_INET6, "fe80::1")
    sin6 = struct.pack("@H", socket.AF_INET6) + struct.pack("!HI16s", 5353, 0x12345, addr6)
    sin6 += struct.pack("@I", 4)
    assert _mmsg.parse_sockaddr(sin6, socket.AF_INET6) == ("fe80::1", 5353, 0x12345, 4)


# -- the kernel fills the buffers --------------------------------------------------


@pytest.fixture(params=[socket.AF_INET, socket.AF_INET6])
def loopback_pair(request: pytest.FixtureRequest) -> Iterator[tuple[socket.socket, socket.socket]]:
    family: socket.AddressFamily = request.param
    rx = socket.socket(family, socket.SOCK_DGRAM)
    tx = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET:
            rx.setsockopt(socket.IPPROTO_IP, _net.IP_PKTINFO, 1)
            rx.setsockopt(socket.IPPROTO_IP, _net.IP_RECVTTL, 1)
            rx.bind(("127.0.0.1", 0))
        else:
            rx.setsockopt(socket.IPPROTO_IPV6, _net.IPV6_RECVPKTINFO, 1)
            rx.setsockopt(socket.IPPROTO_IPV6, _net.IPV6_RECVHOPLIMIT, 1)
            rx.bind(("::1", 0))
        rx.setsockopt(socket.SOL_SOCKET, linux.SO_RXQ_OVFL, 1)
        rx.setblocking(False)
        yield rx, tx
    finally:
        rx.close()
        tx.close()


def read_all(buffers: _mmsg.Buffers, sock: socket.socket) -> list[tuple[bytes, object, int, int]]:
    """(payload, source, flags, control) of everything waiting, through Buffers."""
    got: list[tuple[bytes, object, int, int]] = []
    room = buffers.name_room
    while count := buffers.receive(sock.fileno()):
        for (key_at, data_at), (control_len, flags, length) in zip(
            buffers.slots, buffers.results(count), strict=False
        ):
            key = buffers.memory[key_at : key_at + room + control_len]
            info = _mmsg.parse_control(key, room)
            source = _mmsg.parse_sockaddr(key[:room], sock.family)
            payload = buffers.memory[data_at : data_at + length]
            got.append((payload, source, flags, info.ifindex))
    return got


def test_buffers_read_what_recvmsg_would(
    loopback_pair: tuple[socket.socket, socket.socket],
) -> None:
    rx, tx = loopback_pair
    buffers = _mmsg.Buffers(rx.family)
    mixed = [bytes([i]) * n for i, n in enumerate((1, 64, 1400, 9000, 60000, 0, 70))]
    # Then more than one call's worth, so the buffers are reused within a drain.
    small = [i.to_bytes(2, "big") * 32 for i in range(_mmsg.BATCH * 2 + 5)]
    got: list[tuple[bytes, object, int, int]] = []
    for payloads in (mixed, small):
        for payload in payloads:
            tx.sendto(payload, rx.getsockname())
        got += read_all(buffers, rx)
    lo = socket.if_nametoindex("lo")
    # Sent from the wildcard address: loopback's own address is the source.
    source = (rx.getsockname()[0], *tx.getsockname()[1:])
    assert [g[0] for g in got] == mixed + small
    assert {(g[1], g[2], g[3]) for g in got} == {(source, 0, lo)}
    assert buffers.receive(rx.fileno()) == 0


def test_oversize_datagrams_are_flagged_truncated(
    loopback_pair: tuple[socket.socket, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    rx, tx = loopback_pair
    monkeypatch.setattr(_mmsg, "SLOT", 1024)
    buffers = _mmsg.Buffers(rx.family)
    for size in (100, 1024, 1025, 3000):
        tx.sendto(b"z" * size, rx.getsockname())
    got = read_all(buffers, rx)
    assert [(len(g[0]), bool(g[2] & _mmsg.MSG_TRUNC)) for g in got] == [
        (100, False),
        (1024, False),
        (1024, True),
        (1024, True),
    ]


def test_kernel_drops_arrive_as_a_control_message(
    loopback_pair: tuple[socket.socket, socket.socket],
) -> None:
    rx, tx = loopback_pair
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
    buffers = _mmsg.Buffers(rx.family)
    drops = None
    received = 0
    # The count rides on datagrams queued after a drop: send one more once read.
    for burst in (200, 1):
        for _ in range(burst):
            tx.sendto(b"d" * 200, rx.getsockname())
        while count := buffers.receive(rx.fileno()):
            for (key_at, _), (control_len, _, _) in zip(
                buffers.slots, buffers.results(count), strict=False
            ):
                key = buffers.memory[key_at : key_at + buffers.name_room + control_len]
                drops = _mmsg.parse_control(key, buffers.name_room).drops
                received += 1
    assert drops is not None
    assert received + drops == 201


# -- pacing ------------------------------------------------------------------------


def test_light_traffic_is_never_deferred() -> None:
    pacing = Coalescing(0.001)
    # One datagram per wake-up at 1000/s, and a pair arriving together.
    assert not any(pacing.after_wakeup(1, t / 1000) for t in range(1000))
    assert not pacing.after_wakeup(2, 2.0)


def test_a_flood_is_deferred_until_it_ends() -> None:
    pacing = Coalescing(0.001)
    now = 0.0
    deferred = False
    # 100 000/s: 3 datagrams every 30 µs.
    for _ in range(10):
        now += 30e-6
        deferred = pacing.after_wakeup(3, now)
        if deferred:
            break
    assert deferred
    assert pacing.after_deferred(100, more_waiting=False) == 0.001
    assert pacing.after_deferred(256, more_waiting=True) == 0.0
    assert pacing.after_deferred(2, more_waiting=False) is None
    # Back on readiness, a fresh window: a single datagram is read at once.
    assert not pacing.after_wakeup(1, now + 0.01)


def test_zero_delay_turns_coalescing_off_and_the_threshold_follows_the_delay() -> None:
    assert not Coalescing(0.0).after_wakeup(10_000, 1.0)
    assert Coalescing(0.001).threshold == 8
    # A longer delay must not start deferring at lighter rates.
    assert Coalescing(0.05).threshold == 400


@pytest.mark.parametrize("bad", [-0.001, 1.5, "1ms", None, True])
def test_coalesce_delay_validation(bad: object) -> None:
    with pytest.raises(ValueError, match="coalesce_delay"):
        validate_coalesce_delay(bad)  # type: ignore[arg-type]


def udp_pair() -> tuple[socket.socket, socket.socket]:
    """A receiving and a sending UDP socket on loopback; ``send`` reaches the first."""
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.setblocking(False)
    tx.connect(rx.getsockname())
    return rx, tx


async def until(done: Callable[[], bool], timeout: float = 5.0) -> None:
    """Return once ``done()`` holds; fail after ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not done():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.005)


def counting_drain(counts: list[int], fail: Callable[[], bool]) -> Callable[[socket.socket], int]:
    def drain(sock: socket.socket) -> int:
        read = 0
        while read < 256:
            try:
                sock.recv(64)
            except BlockingIOError:
                break
            read += 1
        counts.append(read)
        if fail():
            raise RuntimeError("a sink failed")
        return read

    return drain


def test_socket_reader_coalesces_a_flood_then_watches_again() -> None:
    async def main() -> tuple[int, int, bool, bool]:
        loop = asyncio.get_running_loop()
        a, b = udp_pair()
        counts: list[int] = []
        reader = SocketReader(loop, a, counting_drain(counts, lambda: False), 0.002)
        reader.start()
        try:
            b.send(b"x")
            await until(lambda: sum(counts) == 1)
            light = reader.coalescing
            for _ in range(20):
                for _ in range(40):
                    b.send(b"y")
                await asyncio.sleep(0.001)
            flooded = reader.deferred_reads
            # Waited for, not slept on: a busy machine may run the reads late.
            await until(lambda: sum(counts) == 1 + 20 * 40 and not reader.coalescing)
            b.send(b"z")
            await until(lambda: sum(counts) == 1 + 20 * 40 + 1)
            return sum(counts), flooded, light, reader.coalescing
        finally:
            reader.stop()
            reader.stop()
            a.close()
            b.close()

    total, flooded, light, coalescing_after = run(main())
    assert total == 1 + 20 * 40 + 1
    assert flooded > 0
    assert not light
    assert not coalescing_after


def test_socket_reader_keeps_reading_after_a_failing_deferred_drain() -> None:
    async def main() -> int:
        loop = asyncio.get_running_loop()
        errors: list[object] = []
        loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx.get("exception")))
        a, b = udp_pair()
        counts: list[int] = []
        reader = SocketReader(loop, a, counting_drain(counts, lambda: len(counts) == 2), 0.001)
        reader.start()
        try:
            for _ in range(100):
                b.send(b"y")
            # Waited for, not slept on: a busy machine may run the deferred read late.
            await until(lambda: reader.deferred_reads >= 1 and len(errors) == 1)
            b.send(b"after")
            await until(lambda: sum(counts) >= 101)
            await asyncio.sleep(0.02)  # nothing more comes
            assert len(errors) == 1
            return sum(counts)
        finally:
            reader.stop()
            a.close()
            b.close()

    assert run(main()) == 101
