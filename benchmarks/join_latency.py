"""Join latency: from an address appearing on an interface to datagrams flowing on it.

In a namespace lab (root or ``unshare -rnm``), a peer sends to the group every
millisecond on a link whose host side has no IPv4 address, so a running endpoint
cannot use it. Each trial adds the address and times, on the event loop, from
the kernel's RTM_NEWADDR notification to the first datagram the endpoint
delivers from that link; then removes the address again. The watcher follows
the change through netlink, or by polling (default interval)::

    python benchmarks/join_latency.py [trials]

``measure(trials)`` returns the medians in milliseconds, for benchmarks/run.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import statistics
import sys
import time
from collections.abc import Callable

from mcastio import MulticastEndpoint
from mcastio._platform.linux.netlink import RTM_NEWADDR, open_listener
from mcastio.testing import Lab

GROUP = "239.255.77.1"
PORT = 5077
POLL_INTERVAL = 1.0
SEND_EVERY = 0.001
TIMEOUT = 5.0


async def _sender(sock: socket.socket) -> None:
    while True:
        with contextlib.suppress(BlockingIOError):
            sock.sendto(b"tick", (GROUP, PORT))
        await asyncio.sleep(SEND_EVERY)


async def _ip(*argv: str) -> None:
    # A child forked from this thread lives in the lab's host namespace too.
    proc = await asyncio.create_subprocess_exec("ip", *argv)
    if await proc.wait() != 0:
        raise RuntimeError(f"ip {' '.join(argv)} failed")


async def _wait(cond: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


async def _trials(lab: Lab, peer_sock: socket.socket, netlink: bool, trials: int) -> list[float]:
    link = lab.link[1]
    addr = f"{link.host_addr}/{link.prefixlen}"
    loop = asyncio.get_running_loop()
    observer = open_listener()
    appeared: list[float] = []

    def on_notification() -> None:
        now = time.perf_counter()
        while True:
            try:
                data = observer.recv(65536)
            except BlockingIOError:
                break
            if _has_type(data, RTM_NEWADDR) and not appeared:
                appeared.append(now)

    loop.add_reader(observer.fileno(), on_notification)
    sender = loop.create_task(_sender(peer_sock))
    results: list[float] = []
    try:
        async with MulticastEndpoint(
            GROUP, PORT, netlink=netlink, poll_interval=POLL_INTERVAL
        ) as ep:
            assert ep.watch_mode == ("netlink" if netlink else "poll")
            sub = ep.subscribe(queue_size=4096)
            for _ in range(trials):
                await _wait(lambda: link.host_if not in {i.name for i in ep.interfaces}, "leave")
                # Polling: land anywhere in the interval, not just after a poll.
                await asyncio.sleep(0.05 if netlink else random.uniform(0.05, POLL_INTERVAL))
                while sub.queued:
                    await sub.get_batch()
                appeared.clear()
                await _ip("addr", "add", addr, "dev", link.host_if)
                deadline = loop.time() + TIMEOUT
                while True:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        raise RuntimeError("no datagram after the address appeared")
                    batch = await asyncio.wait_for(sub.get_batch(), remaining)
                    if any(d.interface == link.host_if for d in batch):
                        arrived = time.perf_counter()
                        break
                await _wait(lambda: bool(appeared), "the RTM_NEWADDR notification")
                results.append((arrived - appeared[0]) * 1000)
                await _ip("addr", "del", addr, "dev", link.host_if)
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender
        loop.remove_reader(observer.fileno())
        observer.close()
    return results


def _has_type(data: bytes, kind: int) -> bool:
    offset = 0
    while offset + 16 <= len(data):
        length = int.from_bytes(data[offset : offset + 4], sys.byteorder)
        if int.from_bytes(data[offset + 4 : offset + 6], sys.byteorder) == kind:
            return True
        if length < 16:
            break
        offset += (length + 3) & ~3
    return False


def measure(trials: int = 10) -> dict[str, float]:
    """Median join latency in milliseconds, with netlink and with polling."""
    with Lab(links=2, ipv6=False) as lab:
        link = lab.link[1]
        lab.sh(lab.host, f"ip addr del {link.host_addr}/{link.prefixlen} dev {link.host_if}")
        with lab.inside(link.peer_ns):
            peer_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            peer_sock.setblocking(False)
            peer_sock.setsockopt(
                socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(link.peer_addr)
            )
            with lab.inside():
                netlink = asyncio.run(_trials(lab, peer_sock, True, trials))
                poll = asyncio.run(_trials(lab, peer_sock, False, trials))
        finally:
            peer_sock.close()
    return {
        "trials": float(trials),
        "netlink_median_ms": statistics.median(netlink),
        "netlink_max_ms": max(netlink),
        "poll_median_ms": statistics.median(poll),
        "poll_max_ms": max(poll),
        "poll_interval_ms": POLL_INTERVAL * 1000,
    }


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    trials = int(args[0]) if args else 10
    result = measure(trials)
    print(f"join latency, median of {trials} trials (address appears -> datagrams flowing)")
    print(f"  netlink: {result['netlink_median_ms']:8.1f} ms  (max {result['netlink_max_ms']:.1f})")
    print(
        f"  polling: {result['poll_median_ms']:8.1f} ms  (max {result['poll_max_ms']:.1f}; "
        f"interval {result['poll_interval_ms']:.0f} ms)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
