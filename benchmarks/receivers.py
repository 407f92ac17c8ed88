"""One receiver under test, run as a child process inside the lab's host namespace.

Usage: ``python benchmarks/receivers.py VARIANT GROUP PORT IFNAME[,IFNAME...]``. The
child joins ``GROUP`` on each ``IFNAME``, prints ``ready``, counts datagrams until a
line arrives on stdin, then prints one JSON line: ``{"received": n, "cpu": seconds}``.
A child per variant keeps event loops, garbage and peak RSS of one variant away
from the others. With ``BENCH_LATENCY=1`` the receivers that support it (``plain``,
``stdlib``, ``mcastio-batch``, ``mcastio-aiter``, ``mcastio-protocol``) read a
send time (``CLOCK_MONOTONIC`` ns, first 8 bytes) from every payload and report
the p50/p99 delay from the sender's ``sendto`` to the consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import socket
import struct
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

import mcastio

# Same socket setup as mcastio's receive sockets, so baselines differ only in
# the Python-side path: IP_PKTINFO on, joined by interface index.
_IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
_ANC = socket.CMSG_SPACE(64)
# BENCH_RCVBUF=<bytes> gives every receiver, baselines included, that SO_RCVBUF;
# unset, baselines keep the kernel default and mcastio its own default.
_RCVBUF = int(os.environ["BENCH_RCVBUF"]) if os.environ.get("BENCH_RCVBUF") else None
_EP_KW: dict[str, Any] = {} if _RCVBUF is None else {"receive_buffer": _RCVBUF}
# BENCH_COALESCE=<seconds> sets mcastio's coalesce_delay (unset: its default).
if os.environ.get("BENCH_COALESCE"):
    _EP_KW["coalesce_delay"] = float(os.environ["BENCH_COALESCE"])
_LATENCY = os.environ.get("BENCH_LATENCY") == "1"
_STAMP = struct.Struct("!Q").unpack_from
_IN_PKTINFO = struct.Struct("=i4s4s").unpack_from


class Counter:
    __slots__ = ("delays", "endpoint", "n")

    def __init__(self) -> None:
        self.n = 0
        #: Nanoseconds from each datagram's send to its consumer (BENCH_LATENCY=1).
        self.delays: list[int] = []
        #: The mcastio endpoint under test, whose deferred reads are reported.
        self.endpoint: mcastio.MulticastEndpoint | None = None

    def stamp(self, payloads: list[bytes]) -> None:
        now = time.monotonic_ns()
        self.delays.extend(now - _STAMP(data)[0] for data in payloads)


def plain_socket(group: str, port: int, ifnames: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_IP, _IP_PKTINFO, 1)
    if _RCVBUF is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
    sock.bind(("0.0.0.0", port))
    for ifname in ifnames.split(","):
        index = socket.if_nametoindex(ifname)
        mreq = struct.pack("=4s4si", socket.inet_aton(group), b"\0" * 4, index)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    sock.setblocking(False)
    return sock


class CountingProtocol(asyncio.DatagramProtocol):
    def __init__(self, counter: Counter) -> None:
        self.counter = counter

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.counter.n += 1
        if _LATENCY:
            self.counter.stamp([data])


class BatchProtocol(mcastio.MulticastProtocol):
    def __init__(self, counter: Counter) -> None:
        self.counter = counter

    def datagrams_received(self, batch: list[mcastio.Datagram]) -> None:
        self.counter.n += len(batch)
        if _LATENCY:
            self.counter.stamp([d.data for d in batch])


async def plain(group: str, port: int, ifname: str, c: Counter, ready: Callable[[], None]) -> None:
    """The plain Python loop: recvmsg with IP_PKTINFO, building (data, source, ifindex)."""
    loop = asyncio.get_running_loop()
    sock = plain_socket(group, port, ifname)
    recvmsg = sock.recvmsg
    pktinfo = _IN_PKTINFO

    def drain() -> None:
        batch: list[tuple[bytes, Any, int]] = []
        append = batch.append
        while True:
            try:
                data, anc, _flags, source = recvmsg(65536, _ANC)
            except BlockingIOError:
                break
            append((data, source, pktinfo(anc[0][2])[0]))
        c.n += len(batch)
        if _LATENCY:
            c.stamp([item[0] for item in batch])

    loop.add_reader(sock.fileno(), drain)
    try:
        ready()
        await asyncio.Event().wait()
    finally:
        loop.remove_reader(sock.fileno())
        sock.close()


async def raw(group: str, port: int, ifname: str, c: Counter, ready: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    sock = plain_socket(group, port, ifname)
    recvmsg = sock.recvmsg

    def drain() -> None:
        n = 0
        try:
            while True:
                recvmsg(65536, _ANC)
                n += 1
        except BlockingIOError:
            pass
        c.n += n

    loop.add_reader(sock.fileno(), drain)
    try:
        ready()
        await asyncio.Event().wait()
    finally:
        loop.remove_reader(sock.fileno())
        sock.close()


async def stdlib(group: str, port: int, ifname: str, c: Counter, ready: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    sock = plain_socket(group, port, ifname)
    transport, _ = await loop.create_datagram_endpoint(lambda: CountingProtocol(c), sock=sock)
    try:
        ready()
        await asyncio.Event().wait()
    finally:
        transport.close()


async def mcastio_aiter(
    group: str, port: int, ifname: str, c: Counter, ready: Callable[[], None]
) -> None:
    async with mcastio.MulticastEndpoint(group, port, interfaces=ifname.split(","), **_EP_KW) as ep:
        c.endpoint = ep
        sub = ep.subscribe()
        ready()
        if _LATENCY:
            async for dgram in sub:
                c.n += 1
                c.stamp([dgram.data])
        async for _ in sub:
            c.n += 1


async def mcastio_batch(
    group: str, port: int, ifname: str, c: Counter, ready: Callable[[], None]
) -> None:
    async with mcastio.MulticastEndpoint(group, port, interfaces=ifname.split(","), **_EP_KW) as ep:
        c.endpoint = ep
        batches = ep.batches()
        ready()
        async for batch in batches:
            c.n += len(batch)
            if _LATENCY:
                c.stamp([d.data for d in batch])


async def mcastio_protocol(
    group: str, port: int, ifname: str, c: Counter, ready: Callable[[], None]
) -> None:
    transport, _ = await mcastio.create_multicast_endpoint(
        lambda: BatchProtocol(c), group, port, interfaces=ifname.split(","), **_EP_KW
    )
    c.endpoint = transport.endpoint
    try:
        ready()
        await asyncio.Event().wait()
    finally:
        await transport.endpoint.aclose()


async def mcastio_protocol_plain(
    group: str, port: int, ifname: str, c: Counter, ready: Callable[[], None]
) -> None:
    transport, _ = await mcastio.create_multicast_endpoint(
        lambda: CountingProtocol(c), group, port, interfaces=[ifname], **_EP_KW
    )
    try:
        ready()
        await asyncio.Event().wait()
    finally:
        await transport.endpoint.aclose()


async def asyncio_dgram(
    group: str, port: int, ifname: str, c: Counter, ready: Callable[[], None]
) -> None:
    import asyncio_dgram as adgram

    stream = await adgram.from_socket(plain_socket(group, port, ifname))
    try:
        ready()
        while True:
            await stream.recv()
            c.n += 1
    finally:
        stream.close()


async def multicast_expert(
    group: str, port: int, ifname: str, c: Counter, ready: Callable[[], None]
) -> None:
    import multicast_expert as mx

    rx_class: Any = getattr(mx, "AsyncMcastRxSocket")  # noqa: B009 (missing from __init__ types)
    with rx_class(socket.AF_INET, [group], port, iface=ifname) as rx:
        ready()
        while True:
            await rx.recvfrom()
            c.n += 1


async def idle(group: str, port: int, ifname: str, c: Counter, ready: Callable[[], None]) -> None:
    """An endpoint on every interface with a waiting reader and no traffic."""
    async with mcastio.MulticastEndpoint(group, port, **_EP_KW) as ep:
        ready()
        async for _ in ep:
            c.n += 1


async def stalled(
    group: str, port: int, ifname: str, c: Counter, ready: Callable[[], None]
) -> None:
    """A subscriber that never reads: memory must stay bounded by queue_size."""
    async with mcastio.MulticastEndpoint(group, port, interfaces=[ifname], **_EP_KW) as ep:
        sub = ep.subscribe()
        ready()
        try:
            await asyncio.Event().wait()
        finally:
            c.n = ep.stats.received
            print(json.dumps({"dropped": sub.dropped, "queued": sub.queued}), flush=True)


Variant = Callable[[str, int, str, Counter, Callable[[], None]], Coroutine[Any, Any, None]]

VARIANTS: dict[str, Variant] = {
    "raw": raw,
    "plain": plain,
    "stdlib": stdlib,
    "mcastio-aiter": mcastio_aiter,
    "mcastio-batch": mcastio_batch,
    "mcastio-protocol": mcastio_protocol,
    "mcastio-protocol-plain": mcastio_protocol_plain,
    "asyncio-dgram": asyncio_dgram,
    "multicast-expert": multicast_expert,
    "stalled": stalled,
    "idle": idle,
}


async def main(variant: Variant, group: str, port: int, ifname: str) -> None:
    loop = asyncio.get_running_loop()
    counter = Counter()
    stop = loop.create_future()
    stdin = sys.stdin.fileno()

    def on_stdin() -> None:
        if not stop.done():
            stop.set_result(None)

    loop.add_reader(stdin, on_stdin)

    start = time.process_time()
    start_usage = resource.getrusage(resource.RUSAGE_SELF)

    def ready() -> None:
        nonlocal start, start_usage
        # CPU is counted from here: what the receiver costs once it is set up.
        start = time.process_time()
        start_usage = resource.getrusage(resource.RUSAGE_SELF)
        print("ready", flush=True)

    task = loop.create_task(variant(group, port, ifname, counter, ready))
    await asyncio.wait([task, stop], return_when=asyncio.FIRST_COMPLETED)
    loop.remove_reader(stdin)
    end = time.process_time()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    # The readers live in the endpoint's engine (since the endpoint was split in two);
    # looking for them on the endpoint found nothing, so every row printed "-".
    engine = getattr(counter.endpoint, "_engine", None)
    readers = getattr(engine, "_socket_readers", {})
    deferred = sum(r.deferred_reads for r in readers.values())
    # Whether the receive socket overflowed: where the kernel stamps drop counts on
    # datagrams (main before issue 21c), every datagram after a drop costs more.
    stats = getattr(counter.endpoint, "stats", None)
    kernel_dropped = getattr(stats, "kernel_dropped", None)
    if task.done():
        task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    cpu = end - start
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result: dict[str, float] = {"received": counter.n, "cpu": cpu, "maxrss_kib": rss_kib}
    # User and system time apart: the kernel's share per datagram is the same for
    # every receiver, so it sets the floor any ratio can reach.
    result["user"] = usage.ru_utime - start_usage.ru_utime
    result["sys"] = usage.ru_stime - start_usage.ru_stime
    result["compiled"] = float(mcastio.drain_path == "compiled")
    if counter.endpoint is not None:
        result["deferred_reads"] = deferred
    if kernel_dropped is not None:
        result["kernel_dropped"] = kernel_dropped
    delays = sorted(counter.delays)
    if delays:
        result["p50_us"] = delays[len(delays) // 2] / 1000
        result["p99_us"] = delays[min(len(delays) - 1, len(delays) * 99 // 100)] / 1000
    print(json.dumps(result), flush=True)


def _new_loop(name: str) -> asyncio.AbstractEventLoop:
    if name == "uvloop":
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        return loop
    return asyncio.new_event_loop()


if __name__ == "__main__":
    loop_name, _, variant_name = sys.argv[1].rpartition(":")
    loop = _new_loop(loop_name or "asyncio")
    try:
        loop.run_until_complete(
            main(VARIANTS[variant_name], sys.argv[2], int(sys.argv[3]), sys.argv[4])
        )
    finally:
        loop.close()
