"""Existing DatagramProtocol code, joined and sending on every interface.

Usage:
    python examples/protocol.py [GROUP] [PORT] [--count N] [--interval S] [--duration S]

Joins GROUP (default 239.255.0.1) on every interface, sends "ping" COUNT times
(default 3) out of each, and prints every datagram heard, with the interface it
arrived on, until Ctrl-C (or for --duration seconds). Run two copies on one
link (or in two namespaces of the mcastio lab, see docs/how-to/test-with-the-lab.md) to see each
other's pings.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

import mcastio


class Printer(mcastio.MulticastProtocol):
    def multicast_datagram_received(self, dgram: mcastio.Datagram) -> None:
        print(f"{dgram.interface}: {dgram.source[0]} says {dgram.data!r}", flush=True)


async def main(group: str, port: int, count: int, interval: float, duration: float | None) -> None:
    transport, _ = await mcastio.create_multicast_endpoint(Printer, group, port)
    loop = asyncio.get_running_loop()
    start = loop.time()
    try:
        for _ in range(count):
            transport.sendto(b"ping")
            await asyncio.sleep(interval)
        # Go on printing what others send, until Ctrl-C or the duration is up.
        left = None if duration is None else max(duration - (loop.time() - start), 0)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.Event().wait(), left)
    finally:
        transport.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n", 1)[1].split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("group", nargs="?", default="239.255.0.1", help="default 239.255.0.1")
    parser.add_argument("port", nargs="?", type=int, default=5000, help="default 5000")
    parser.add_argument("--count", type=int, default=3, help="pings to send (default 3)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between pings")
    parser.add_argument("--duration", type=float, help="quit after S seconds (default: Ctrl-C)")
    args = parser.parse_args()
    # Ctrl-C is the normal way to stop: no traceback for it.
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(args.group, args.port, args.count, args.interval, args.duration))
