"""send_all over N interfaces against N plain ``sendto`` calls, in the lab's host namespace."""

from __future__ import annotations

import asyncio
import socket
import statistics
import struct
import time
from collections.abc import Awaitable, Callable, Sequence

import mcastio

PAYLOAD = b"x" * 64


def plain_senders(names: Sequence[str]) -> list[socket.socket]:
    """What an application would write by hand: one socket per interface, by index."""
    socks = []
    for name in names:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
        mreqn = struct.pack("=4s4si", b"\0" * 4, b"\0" * 4, socket.if_nametoindex(name))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
        sock.setblocking(False)
        socks.append(sock)
    return socks


def _time(send: Callable[[bytes], object], calls: int) -> tuple[float, float]:
    # Both sides are one call with the payload as its argument, so neither pays
    # for an extra wrapper (functools.partial) the other does not. The CPU time
    # (user + system, this thread) is what a busy machine does not inflate: a
    # preempted sender loses wall time, not CPU.
    start, cpu = time.perf_counter(), time.thread_time()
    for _ in range(calls):
        send(PAYLOAD)
    return (
        (time.perf_counter() - start) / calls * 1e6,
        (time.thread_time() - cpu) / calls * 1e6,
    )


async def _time_async(
    send: Callable[[bytes], Awaitable[object]], calls: int
) -> tuple[float, float]:
    start, cpu = time.perf_counter(), time.thread_time()
    for _ in range(calls):
        await send(PAYLOAD)
    return (
        (time.perf_counter() - start) / calls * 1e6,
        (time.thread_time() - cpu) / calls * 1e6,
    )


async def measure(
    group: str, port: int, names: Sequence[str], rounds: int, sends: int
) -> dict[str, float]:
    """Median µs per call of N plain sendto (also inside a coroutine), send_all_nowait and
    await send_all; and the medians of the per-round ratios."""
    socks = plain_senders(names)
    dest = (group, port)
    calls = max(20, sends // len(names))

    def plain(payload: bytes) -> None:
        for sock in socks:
            sock.sendto(payload, dest)

    async def plain_async(payload: bytes) -> None:
        # The same N calls inside a coroutine: what any awaitable send costs extra.
        for sock in socks:
            sock.sendto(payload, dest)

    kinds = ("plain", "plain_async", "nowait", "async")
    samples: dict[str, list[float]] = {k: [] for k in kinds}
    cpu: dict[str, list[float]] = {k: [] for k in kinds}
    try:
        async with mcastio.MulticastEndpoint(group, port, interfaces=list(names)) as ep:
            if len(ep.interfaces) != len(names):
                raise RuntimeError(f"joined {len(ep.interfaces)} of {len(names)} interfaces")
            for _ in range(rounds):
                # Interleaved so that drift on a shared machine hits all three alike.
                for kind, (wall, used) in (
                    ("plain", _time(plain, calls)),
                    ("nowait", _time(ep.send_all_nowait, calls)),
                    ("plain_async", await _time_async(plain_async, calls)),
                    ("async", await _time_async(ep.send_all, calls)),
                ):
                    samples[kind].append(wall)
                    cpu[kind].append(used)
    finally:
        for sock in socks:
            sock.close()
    med = {k: statistics.median(v) for k, v in samples.items()}
    ratio_nowait = statistics.median(
        n / p for n, p in zip(samples["nowait"], samples["plain"], strict=True)
    )
    ratio_async = statistics.median(
        a / p for a, p in zip(samples["async"], samples["plain"], strict=True)
    )
    ratio_vs_async = statistics.median(
        a / p for a, p in zip(samples["async"], samples["plain_async"], strict=True)
    )
    cpu_ratio_nowait = statistics.median(
        n / p for n, p in zip(cpu["nowait"], cpu["plain"], strict=True)
    )
    cpu_ratio_async = statistics.median(
        a / p for a, p in zip(cpu["async"], cpu["plain"], strict=True)
    )
    return {
        **med,
        "cpu_ratio_nowait": cpu_ratio_nowait,
        "cpu_ratio_async": cpu_ratio_async,
        "ratio_nowait": ratio_nowait,
        "ratio_async": ratio_async,
        "ratio_async_vs_async": ratio_vs_async,
    }


async def burst_cost(
    group: str, port: int, name: str, rounds: int, count: int, size: int = 64, burst: int = 64
) -> dict[str, list[float]]:
    """CPU µs per datagram of ``count`` datagrams to one group out of one interface, in
    bursts: a sendto loop, await send_all per datagram, send_many (sendmmsg) and GSO."""
    from mcastio import _sendmany

    (sock,) = plain_senders([name])
    dest = (group, port)
    payloads = [bytes([i]) * size for i in range(burst)]
    bursts = count // burst
    samples: dict[str, list[float]] = {"sendto": [], "send_all": [], "sendmmsg": [], "gso": []}
    refused = 0

    async def sendto_loop() -> None:
        nonlocal refused
        for _ in range(bursts):
            for p in payloads:
                try:
                    sock.sendto(p, dest)
                except BlockingIOError:
                    refused += 1
            await asyncio.sleep(0)

    try:
        async with mcastio.MulticastEndpoint(group, port, interfaces=[name]) as ep:

            async def send_all_loop() -> None:
                for _ in range(bursts):
                    for p in payloads:
                        await ep.send_all(p)
                    await asyncio.sleep(0)

            async def many(gso: bool) -> None:
                _sendmany.USE_GSO = gso
                for _ in range(bursts):
                    for r in await ep.send_many(payloads):
                        if not r.ok:
                            raise RuntimeError(f"send_many failed: {r}")
                    await asyncio.sleep(0)

            ways: dict[str, Callable[[], Awaitable[None]]] = {
                "sendto": sendto_loop,
                "send_all": send_all_loop,
                "sendmmsg": lambda: many(False),
                "gso": lambda: many(True),
            }
            for _ in range(rounds):
                # Interleaved so that drift on a shared machine hits every way alike.
                for key, way in ways.items():
                    start = time.process_time()
                    await way()
                    samples[key].append((time.process_time() - start) / (bursts * burst) * 1e6)
    finally:
        _sendmany.USE_GSO = True
        sock.close()
    if refused:
        samples["sendto_refused"] = [float(refused)]
    return samples


def run(group: str, port: int, names: Sequence[str], rounds: int, sends: int) -> dict[str, float]:
    return asyncio.run(measure(group, port, names, rounds, sends))
