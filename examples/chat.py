"""A tiny multicast chat: every line you type reaches every link; every line heard is shown.

Run it on two hosts (or in two lab namespaces):  python examples/chat.py [GROUP] [PORT]
"""

from __future__ import annotations

import asyncio
import sys

import mcastio


async def main(group: str, port: int) -> None:
    async with mcastio.MulticastEndpoint(group, port) as ep:
        print(f"joined {group}:{port} on {', '.join(i.name for i in ep.interfaces)}")
        sub = ep.subscribe()

        async def show() -> None:
            async for dgram in sub:
                text = dgram.data.decode(errors="replace").rstrip()
                print(f"[{dgram.interface} {dgram.source[0]}] {text}")

        printer = asyncio.create_task(show())
        try:
            while line := await asyncio.to_thread(sys.stdin.readline):
                for result in await ep.send_all(line.encode()):
                    if not result.ok:
                        print(f"(not sent on {result.interface}: {result.error})")
        finally:
            sub.close()
            await printer


if __name__ == "__main__":
    args = sys.argv[1:]
    asyncio.run(main(args[0] if args else "239.255.0.1", int(args[1]) if len(args) > 1 else 5000))
