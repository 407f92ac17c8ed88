"""Latency that coalescing adds at a given rate: ``python benchmarks/coalesce_latency.py``.

A peer sends timestamped 64-byte datagrams (``stamped_sender.py``) at RATE/s for
SECONDS; the host receives them with ``async for`` twice per round, with the
default ``coalesce_delay`` (1 ms) and with 0, in alternating order. Prints the
median and p99 latency of each, medians over rounds, side by side.
Arguments: ``[RATE [SECONDS [ROUNDS]]]``, default 9000 2 3 (about a 100 Mbit/s
MPEG-TS stream in 1,316-byte datagrams).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import struct
import subprocess
import sys
import time

from mcastio import MulticastEndpoint
from mcastio.testing import Lab

HERE = os.path.dirname(os.path.abspath(__file__))
GROUP, PORT = "239.255.77.1", 47001


async def receive(
    lab: Lab, rate: int, seconds: float, coalesce: float | None
) -> tuple[float, float, int]:
    link = lab.link[0]
    options = {} if coalesce is None else {"coalesce_delay": coalesce}
    lat: list[float] = []
    async with MulticastEndpoint(
        GROUP,
        PORT,
        interfaces=[link.host_if],
        keepalive=False,
        **options,  # type: ignore[arg-type]
    ) as ep:
        sub = ep.subscribe(queue_size=100_000)
        sender = lab.popen(
            link.peer_ns, sys.executable, os.path.join(HERE, "stamped_sender.py"),
            GROUP, str(PORT), link.peer_addr, str(rate), str(seconds),
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        unpack = struct.Struct("!Q").unpack_from
        total = int(rate * seconds)

        async def consume() -> None:
            async for dgram in sub:
                lat.append((time.monotonic_ns() - unpack(dgram.data)[0]) / 1e6)
                if len(lat) == total:
                    return

        # Some may be lost: then the count says how many arrived.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(consume(), seconds + 2.0)
        sender.wait(timeout=10)
    lat.sort()
    return statistics.median(lat), lat[int(len(lat) * 0.99)], len(lat)


def main(rate: int = 9000, seconds: float = 2.0, rounds: int = 3) -> None:
    results: dict[str, list[tuple[float, float, int]]] = {"1 ms (default)": [], "0": []}
    with Lab(links=1, ipv6=False) as lab, lab.inside():
        for r in range(rounds):
            order = [("1 ms (default)", None), ("0", 0.0)]
            for label, coalesce in order if r % 2 == 0 else order[::-1]:
                results[label].append(asyncio.run(receive(lab, rate, seconds, coalesce)))
    print(f"{rate} datagrams/s for {seconds:g} s, {rounds} rounds (medians over rounds)")
    print(f"{'coalesce_delay':<16}{'median ms':>10}{'p99 ms':>10}{'received':>10}")
    for label, runs in results.items():
        med = statistics.median(x[0] for x in runs)
        p99 = statistics.median(x[1] for x in runs)
        got = statistics.median(x[2] for x in runs)
        print(f"{label:<16}{med:>10.3f}{p99:>10.3f}{got:>10.0f}")


if __name__ == "__main__":
    main(*(int(a) if i != 1 else float(a) for i, a in enumerate(sys.argv[1:])))  # type: ignore[arg-type]
