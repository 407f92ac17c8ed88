"""The keeper's cost at 100 groups x 16 links: the longest event-loop stall it causes.

Needs root (or ``unshare -rn``). Builds a namespace lab of 16 links (IPv4 only, so no
address turning up after DAD wakes the interface watchers mid-measure). Each run is a
fresh child process in the host namespace, on one event loop: it opens 100 endpoints
(one group each, all 16 links, 1,600 memberships), lets the start-up settle, then a
probe that sleeps 1 ms records how late each wake-up is for ``--seconds``. The
keepers refresh every 0.5 s, 120 times more often than the 60 s default, so every
second of the window holds 3,200 refreshes and the periodic work of the keepers
(/proc reads included) comes round several times.

Each round runs the keepers on, then off (the same 100 endpoints without a keeper:
what the loop costs anyway on this machine, side by side), for this tree and for
every ``--compare-with`` tree. Reported: the median and the worst over the rounds of
each run's longest stall, of its 99.9th percentile wake-up delay, and of the count of
stalls over 5 ms, with the CPU seconds of the window and the refreshes made.

::

    sudo python benchmarks/keeper_stall.py                         # 5 rounds
    sudo python benchmarks/keeper_stall.py --compare-with /tmp/before --rounds 7

``--compare-with TREE`` runs the same with the ``mcastio`` package of TREE (for
instance ``git archive <commit> | tar -x -C TREE``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
GROUPS = 100
LINKS = 16
KEEPALIVE = 0.5
PORT = 42450


async def _measure(keepalive: bool, seconds: float) -> dict[str, Any]:
    from mcastio import MulticastEndpoint

    loop = asyncio.get_running_loop()
    names = sorted(n for n in os.listdir("/sys/class/net") if n != "lo")
    async with contextlib.AsyncExitStack() as stack:
        eps = [
            await stack.enter_async_context(
                MulticastEndpoint(
                    f"239.255.{50 + i // 250}.{i % 250 + 1}",
                    PORT,
                    interfaces=names,
                    keepalive=KEEPALIVE if keepalive else False,
                )
            )
            for i in range(GROUPS)
        ]
        # The 100 starts and their watchers' first rounds are not the keeper's cost.
        await asyncio.sleep(1.0)
        gaps: list[float] = []
        busy: list[float] = []
        cpu = time.process_time()
        end = loop.time() + seconds
        while loop.time() < end:
            before, held = time.perf_counter(), time.thread_time()
            await asyncio.sleep(0.001)
            gaps.append(time.perf_counter() - before - 0.001)
            # CPU the loop's thread spent meanwhile: what the loop's own work cost,
            # whatever other programs on the machine take.
            busy.append(time.thread_time() - held)
        cpu = time.process_time() - cpu
        refreshes = sum(s.refreshes for ep in eps for s in ep.keepalive_state)
        links = len(eps[0].interfaces)
    gaps.sort()
    return {
        "busy_ms": max(busy) * 1000,
        "worst_ms": gaps[-1] * 1000,
        "p999_ms": gaps[int(len(gaps) * 0.999)] * 1000,
        "over_5ms": sum(g > 0.005 for g in gaps),
        "cpu_s": cpu,
        "refreshes": refreshes,
        "links": links,
    }


def child(keepalive: bool, seconds: float) -> None:
    print(json.dumps(asyncio.run(_measure(keepalive, seconds))))


def run_child(host: str, tree: Path, keepalive: bool, seconds: float) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(tree))
    argv = ["--child", "on" if keepalive else "off", "--seconds", str(seconds)]
    proc = subprocess.run(
        ["ip", "netns", "exec", host, sys.executable, __file__, *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=120 + seconds * 10,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"child failed ({tree}): {proc.stderr.strip()[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--compare-with", metavar="TREE", type=Path, action="append", default=[])
    parser.add_argument("--child", choices=("on", "off"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child == "on", args.seconds)
        return 0
    sys.path.insert(0, str(ROOT))
    from machine import machine

    from mcastio.testing import Lab

    others = [(f"cmp{i + 1}", t.resolve()) for i, t in enumerate(args.compare_with)]
    trees = [("this", ROOT), *others]
    if len(trees) == 2:
        trees[1] = ("before", trees[1][1])
    print(machine())
    print(
        f"{GROUPS} endpoints x {LINKS} links, keepalive {KEEPALIVE} s, "
        f"{args.seconds:g} s measured per run, {args.rounds} rounds"
    )
    lab = Lab(
        links=LINKS,
        ipv6=False,
        sysctls={
            "net.ipv4.igmp_max_memberships": "64",
            "net.ipv6.conf.default.disable_ipv6": "1",
            "net.ipv6.conf.all.disable_ipv6": "1",
        },
    )
    lab.build()
    rows: dict[tuple[str, str], list[dict[str, Any]]] = {}
    try:
        time.sleep(1.5)  # every veth operationally up before the first run
        for _ in range(args.rounds):
            for label, tree in trees:
                for keepalive in (True, False):
                    result = run_child(lab.host, tree, keepalive, args.seconds)
                    rows.setdefault((label, "on" if keepalive else "off"), []).append(result)
    finally:
        lab.destroy()
    print(
        "stall: how late the 1 ms probe woke (wall clock, includes other programs' load);"
        "\nbusy: the loop thread's CPU time in its longest gap (this process's work only)"
    )
    print(
        f"{'tree':<7}{'keeper':<7}{'stall median':>13}{'worst':>9}{'p99.9 med':>10}"
        f"{'>5ms med':>9}{'max':>5}{'CPU s':>7}{'refreshes':>10}"
    )
    for (label, keeper), results in rows.items():

        def med(key: str, results: list[dict[str, Any]] = results) -> float:
            return float(statistics.median(r[key] for r in results))

        print(
            f"{label:<7}{keeper:<7}{med('worst_ms'):>10.1f} ms"
            f"{max(r['worst_ms'] for r in results):>6.1f} ms"
            f"{med('p999_ms'):>7.2f} ms{med('over_5ms'):>9.0f}"
            f"{max(r['over_5ms'] for r in results):>5}{med('cpu_s'):>7.2f}"
            f"{med('refreshes'):>10.0f}"
        )
        print("  each run's longest stall (ms):", " ".join(f"{r['worst_ms']:.1f}" for r in results))
        print(
            f"  busy: median {med('busy_ms'):.2f} ms, worst "
            f"{max(r['busy_ms'] for r in results):.2f} ms; each run:",
            " ".join(f"{r['busy_ms']:.2f}" for r in results),
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
