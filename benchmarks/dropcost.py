"""What a stamped drop count costs each drain, on loopback: ``python benchmarks/dropcost.py``.

With ``SO_RXQ_OVFL`` on, a socket that has dropped even one datagram gets its running
drop count as a control message on every datagram after that, for the rest of its
life. Every drain must then parse it, and the pure recvmmsg drain's arrival cache
misses on every datagram (the count is part of the bytes it remembers). mcastio asks
for ``SO_RXQ_OVFL`` only where ``SO_MEMINFO`` cannot read the count (Linux < 4.6).
This measures each drain, in this process, on three sockets: one that never asked
for the count, one that asked but never dropped, and one that asked and dropped.
Nothing leaves the host: 127.0.0.1 to itself.
"""

from __future__ import annotations

import socket
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mcastio import _net, _receive
from mcastio._model import parse_group
from mcastio._platform import linux
from mcastio._receive import ReceivePath

BURST = 256
ROUNDS = 200
WAYS = ("not asked", "asked, no drop yet", "asked, after a drop")


def receiver(ask: bool, dropped: bool) -> socket.socket:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.setsockopt(socket.IPPROTO_IP, _net.IP_PKTINFO, 1)
    if ask:
        rx.setsockopt(socket.SOL_SOCKET, linux.SO_RXQ_OVFL, 1)
    rx.bind(("127.0.0.1", 0))
    rx.setblocking(False)
    if dropped:
        # A buffer too small for a burst: the kernel drops, and counts it for good.
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            for _ in range(50):
                tx.sendto(b"x" * 64, rx.getsockname())
        while True:
            try:
                rx.recv(100)
            except BlockingIOError:
                break
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    return rx


def path(drain: str) -> ReceivePath:
    """A receive path with ``drain`` that delivers what is sent to 127.0.0.1."""
    _receive.USE_COMPILED = drain == "compiled"
    _receive.USE_RECVMMSG = drain != "recvmsg"
    rp = ReceivePath(parse_group("239.255.0.1"), 1)
    assert rp.path == drain, rp.path
    rp.groups = (parse_group("239.255.0.1"),)
    # Loopback unicast stands in for the group: the drains compare the destination.
    rp._groups = {socket.inet_aton("127.0.0.1"): "127.0.0.1"}
    rp._wire_groups = {"127.0.0.1": "127.0.0.1"}
    if rp._compiled is not None:
        rp._compiled.set_groups(rp._groups)
    rp.names = {1: "lo"}
    return rp


def main() -> None:
    drains = ["compiled", "recvmmsg", "recvmsg"] if _receive.USE_COMPILED else []
    drains = drains or ["recvmmsg", "recvmsg"]
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    print(
        f"## a stamped drop count: ns per datagram, {BURST}-datagram bursts of 64 bytes,"
        f" median of {ROUNDS} (loopback)"
    )
    print("| drain | " + " | ".join(WAYS) + " | after a drop / not asked |")
    print("|---|" + "---:|" * (len(WAYS) + 1))
    for drain in drains:
        setups = [
            (receiver(ask, dropped), path(drain))
            for ask, dropped in ((False, False), (True, False), (True, True))
        ]
        samples: list[list[float]] = [[] for _ in setups]
        for _ in range(ROUNDS):
            for (rx, rp), into in zip(setups, samples, strict=True):
                for _ in range(BURST):
                    tx.sendto(b"y" * 64, rx.getsockname())
                before = rp.received
                start = time.perf_counter_ns()
                read = rp.drain(rx)
                into.append((time.perf_counter_ns() - start) / BURST)
                if read != BURST or rp.received - before != BURST:
                    raise RuntimeError(f"{drain}: read {read}, delivered {rp.received - before}")
        medians = [statistics.median(s) for s in samples]
        cells = " | ".join(f"{m:.0f}" for m in medians)
        print(f"| {drain} | {cells} | {medians[2] / medians[0]:.2f} |", flush=True)
        for rx, _rp in setups:
            rx.close()
    tx.close()


if __name__ == "__main__":
    main()
