"""Existing DatagramProtocol code, joined and sending on every interface."""

from __future__ import annotations

import asyncio

import mcastio


class Printer(mcastio.MulticastProtocol):
    def multicast_datagram_received(self, dgram: mcastio.Datagram) -> None:
        print(f"{dgram.interface}: {dgram.source[0]} says {dgram.data!r}")


async def main() -> None:
    transport, _ = await mcastio.create_multicast_endpoint(Printer, "239.255.0.1", 5000)
    try:
        for _ in range(3):
            transport.sendto(b"ping")
            await asyncio.sleep(1)
    finally:
        transport.close()


if __name__ == "__main__":
    asyncio.run(main())
