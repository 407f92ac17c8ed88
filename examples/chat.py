"""A tiny multicast chat: every line you type reaches every link; every line heard is shown.

Usage:
    python examples/chat.py [GROUP] [PORT]        (default 239.255.0.1 5000)

Run it on two hosts on the same link (or in two namespaces of the mcastio lab,
see docs/how-to/test-with-the-lab.md), type a line and press Enter. Ctrl-C or Ctrl-D quits. It
sends with TTL 1, so nothing leaves the local links.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys

import mcastio


async def _stdin_lines() -> asyncio.StreamReader:
    """Standard input as an asyncio stream: no reader thread that would keep
    the program alive after Ctrl-C until Enter is pressed."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    # A duplicate, so closing the transport leaves fd 0 open for the restore below.
    pipe = os.fdopen(os.dup(sys.stdin.fileno()), "rb", buffering=0)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    return reader


async def main(group: str, port: int) -> None:
    async with mcastio.MulticastEndpoint(group, port) as ep:
        names = ", ".join(i.name for i in ep.interfaces) or "no interface yet"
        print(f"joined {group}:{port} on {names}; type a line, Ctrl-C to quit", flush=True)
        sub = ep.subscribe()

        async def show() -> None:
            async for dgram in sub:
                text = dgram.data.decode(errors="replace").rstrip()
                print(f"[{dgram.interface} {dgram.source[0]}] {text}", flush=True)

        printer = asyncio.create_task(show())
        lines = await _stdin_lines()
        try:
            while line := await lines.readline():
                for result in await ep.send_all(line):
                    if not result.ok:
                        print(f"(not sent on {result.interface}: {result.error})")
        finally:
            sub.close()
            await printer


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] in (["-h"], ["--help"]):
        print(__doc__)
        sys.exit(0)
    blocking = os.get_blocking(0)
    try:
        asyncio.run(
            main(args[0] if args else "239.255.0.1", int(args[1]) if len(args) > 1 else 5000)
        )
    except KeyboardInterrupt:
        print()
    finally:
        # The asyncio pipe reader made stdin non-blocking; a shell sharing the
        # terminal expects it back as it was.
        with contextlib.suppress(OSError):
            os.set_blocking(0, blocking)
