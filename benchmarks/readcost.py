"""What one read costs beyond the drain: ``python benchmarks/readcost.py``.

Under a flood the receive socket is read from a timer every ``coalesce_delay``, so each
read pays an event-loop pass, the hand-off of its batch to the consumer, and the wake
from the sleep before it. This measures those per read, in this process, with no
socket: a timer callback hands a batch of 120 ready-made ``Datagram`` values to the
receive path's sinks, as the drain does, for each receiver (none, the protocol hook,
``batches()``, ``async for``). First with the passes back to back (``delay`` 0), then
after a real sleep of 1 and 4 ms, as under a flood. CPU is this thread's time.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mcastio._fastpath import new_datagram
from mcastio._model import Datagram, parse_group
from mcastio._readers import Readers
from mcastio._receive import ReceivePath
from mcastio._subscription import BatchSubscription

#: Datagrams per read: about what 100 kpps gives with the default 1 ms delay.
BATCH = 120
KINDS = ("none", "hook", "batches()", "async for")


async def per_read(kind: str, delay: float, reads: int) -> float:
    """Thread CPU µs per read: the timer pass, the hand-off and the consumer's step."""
    loop = asyncio.get_running_loop()
    path = ReceivePath(parse_group("239.255.0.1"), 1)
    readers = Readers(path, None)
    ready = [
        new_datagram(b"x" * 64, ("10.0.0.1", 5000), "239.255.0.1", "eth0") for _ in range(BATCH)
    ]
    got = [0]
    done: asyncio.Future[None] = loop.create_future()
    consumer: asyncio.Task[None] | None = None
    sub = readers.subscribe(4 * BATCH)

    def hook(batch: list[Datagram]) -> None:
        got[0] += len(batch)

    async def consume() -> None:
        if kind == "batches()":
            async for batch in BatchSubscription(sub):
                got[0] += len(batch)
        else:
            async for _ in sub:
                got[0] += 1

    if kind == "hook":
        sub.close()
        path.add_sink(hook)
    elif kind == "none":
        sub.close()
    else:
        consumer = loop.create_task(consume())
    count = [0]

    def tick() -> None:
        count[0] += 1
        path._hand_on(list(ready))
        if count[0] >= reads:
            loop.call_soon(done.set_result, None)
        else:
            loop.call_later(delay, tick)

    await asyncio.sleep(0)
    start = time.thread_time_ns()
    loop.call_later(delay, tick)
    await done
    await asyncio.sleep(0)
    spent = time.thread_time_ns() - start
    sub.close()
    if consumer is not None:
        await consumer
    if kind != "none" and got[0] != reads * BATCH:
        raise RuntimeError(f"{kind}: {got[0]} of {reads * BATCH} delivered")
    return spent / reads / 1000


def main() -> None:
    print(f"## CPU per read of {BATCH} datagrams beyond the drain (µs, median of 5)")
    print(
        "| delay before each read | " + " | ".join(KINDS) + " | async for over none, per datagram |"
    )
    print("|---|" + "---:|" * (len(KINDS) + 1))
    for delay, reads in ((0.0, 3000), (0.001, 1000), (0.004, 300)):
        samples: dict[str, list[float]] = {kind: [] for kind in KINDS}
        for _ in range(5):
            for kind in KINDS:
                samples[kind].append(asyncio.run(per_read(kind, delay, reads)))
        medians = [statistics.median(samples[kind]) for kind in KINDS]
        cells = " | ".join(f"{m:.1f}" for m in medians)
        extra = (medians[3] - medians[0]) * 1000 / BATCH
        label = "none (back to back)" if not delay else f"{delay * 1000:g} ms sleep"
        print(f"| {label} | {cells} | {extra:.0f} ns |", flush=True)


if __name__ == "__main__":
    main()
