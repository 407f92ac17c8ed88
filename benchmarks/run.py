"""mcastio benchmarks: ``python benchmarks/run.py`` (``--quick`` for a short run).

Builds its own network-namespace lab (needs root, or ``unshare -rnm``), floods one
link from the peer with iperf (iperf2) and runs every receiver side by side in the
same run, several rounds, printing medians and ratios. Then measures send_all
against plain sendto calls over 1, 8 and 64 interfaces, the memory of a stalled
consumer under a flood, the idle CPU of an endpoint and, when
``benchmarks/join_latency.py`` exists, join latency.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from mcastio.testing import Lab, lab_support  # noqa: E402

GROUP = "239.255.66.1"
PORT = 5601

#: (label, child variant, baseline label for the ratio column)
RECEIVERS: tuple[tuple[str, str, str], ...] = (
    ("raw recvmsg drain loop", "raw", "raw recvmsg drain loop"),
    ("stdlib DatagramProtocol", "stdlib", "raw recvmsg drain loop"),
    ("mcastio async for", "mcastio-aiter", "raw recvmsg drain loop"),
    ("mcastio batches()", "mcastio-batch", "raw recvmsg drain loop"),
    ("mcastio protocol, datagrams_received", "mcastio-protocol", "raw recvmsg drain loop"),
    ("mcastio protocol, datagram_received", "mcastio-protocol-plain", "raw recvmsg drain loop"),
    ("asyncio-dgram", "asyncio-dgram", "raw recvmsg drain loop"),
    ("multicast-expert (async)", "multicast-expert", "raw recvmsg drain loop"),
    ("uvloop raw recvmsg drain loop", "uvloop:raw", "uvloop DatagramProtocol"),
    ("uvloop DatagramProtocol", "uvloop:stdlib", "uvloop DatagramProtocol"),
    ("uvloop mcastio async for", "uvloop:mcastio-aiter", "uvloop DatagramProtocol"),
    ("uvloop mcastio batches()", "uvloop:mcastio-batch", "uvloop DatagramProtocol"),
)

_NEEDS = {
    "uvloop": "uvloop",
    "asyncio-dgram": "asyncio_dgram",
    "multicast-expert": "multicast_expert",
}


@dataclass
class Series:
    label: str
    variant: str
    baseline: str
    fractions: list[float] = field(default_factory=list)
    cpu_per_dgram_us: list[float] = field(default_factory=list)
    skipped: str | None = None


def missing_module(variant: str) -> str | None:
    for key, module in _NEEDS.items():
        if key in variant and importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install -e '.[bench]')"
    return None


class Child:
    """A receiver process in the lab's host namespace."""

    def __init__(self, lab: Lab, variant: str, ifname: str) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = lab.popen(
            lab.host,
            sys.executable,
            str(HERE / "receivers.py"),
            variant,
            GROUP,
            str(PORT),
            ifname,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )

    def wait_ready(self) -> None:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != b"ready":
            raise RuntimeError(self._failure(line))

    def stop(self) -> dict[str, float]:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(b"stop\n")
        self.proc.stdin.flush()
        result: dict[str, float] = {}
        for raw in self.proc.stdout:
            result.update(json.loads(raw))
            if "received" in result:
                break
        self.proc.wait(timeout=10)
        if "received" not in result:
            raise RuntimeError(self._failure(b""))
        return result

    def _failure(self, line: bytes) -> str:
        self.proc.kill()
        self.proc.wait(timeout=5)
        err = self.proc.stderr.read().decode() if self.proc.stderr else ""
        last = (err.strip().splitlines() or [line.decode().strip() or "no output"])[-1]
        return f"exited {self.proc.returncode}: {last}"


def flood(lab: Lab, rate: int, seconds: float, size: int = 64) -> int:
    """Send ``rate`` datagrams/s for ``seconds`` from the peer of link 0; return how many."""
    proc = lab.run(
        lab.link[0].peer_ns,
        "iperf", "-u", "-c", GROUP, "-p", str(PORT), "-T", "1",
        "-l", str(size), "-b", f"{rate}pps", "-t", str(seconds),
        timeout=seconds + 30,
    )  # fmt: skip
    match = re.search(r"Sent (\d+) datagrams", proc.stdout)
    if match is None:
        raise RuntimeError(f"cannot read iperf's sent count from: {proc.stdout[-300:]}")
    return int(match.group(1))


def measure_receive(lab: Lab, series: Series, rate: int, seconds: float) -> None:
    child = Child(lab, series.variant, lab.link[0].host_if)
    try:
        child.wait_ready()
    except RuntimeError as exc:
        series.skipped = f"cannot run: {exc}"
        return
    sent = flood(lab, rate, seconds)
    # Let the receiver finish what is already in its socket buffer.
    time.sleep(0.3)
    result = child.stop()
    # iperf2 ends a UDP stream with a few extra FIN datagrams beyond "Sent N".
    received = min(int(result["received"]), sent)
    series.fractions.append(received / sent)
    if received:
        series.cpu_per_dgram_us.append(result["cpu"] / received * 1e6)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def receive_table(all_series: list[Series]) -> list[str]:
    by_label = {s.label: s for s in all_series}
    rows = [
        "| receiver | received (median) | ratio to baseline (median) | baseline"
        " | CPU µs/datagram |",
        "|---|---:|---:|---|---:|",
    ]
    for s in all_series:
        if s.skipped:
            rows.append(f"| {s.label} | - | - | {s.skipped} | - |")
            continue
        base = by_label[s.baseline]
        ratios = [a / b for a, b in zip(s.fractions, base.fractions, strict=False) if b > 0]
        ratio = f"{median(ratios):.2f}" if ratios and not base.skipped else "-"
        rows.append(
            f"| {s.label} | {median(s.fractions) * 100:.1f}% | {ratio} | {s.baseline} |"
            f" {median(s.cpu_per_dgram_us):.2f} |"
        )
    return rows


def run_receive(lab: Lab, rounds: int, seconds: float, rate: int, only: set[str] | None) -> None:
    all_series = [
        Series(label, variant, base)
        for label, variant, base in RECEIVERS
        if only is None or variant in only
    ]
    for s in all_series:
        s.skipped = missing_module(s.variant)
    print(f"receive: {rounds} rounds x {seconds:g} s at {rate} datagrams/s of 64 bytes", flush=True)
    for r in range(rounds):
        # Rotate the order so slow drift on a shared machine spreads over all rows.
        order = all_series[r % len(all_series) :] + all_series[: r % len(all_series)]
        for s in order:
            if s.skipped is None:
                measure_receive(lab, s, rate, seconds)
        print(f"  round {r + 1}/{rounds} done", flush=True)
    print("\n".join(receive_table(all_series)), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="3 short rounds")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=None, help="flood length per receiver")
    parser.add_argument("--rate", type=int, default=100_000, help="datagrams per second")
    parser.add_argument("--only", default=None, help="comma-separated receiver variants")
    args = parser.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 5)
    seconds = args.seconds or (1.0 if args.quick else 2.0)

    reason = lab_support()
    if reason is not None:
        print(f"benchmarks need a network-namespace lab: {reason}", file=sys.stderr)
        return 2
    if shutil.which("iperf") is None:
        print("benchmarks need iperf (iperf2): apt-get install iperf", file=sys.stderr)
        return 2
    only = set(args.only.split(",")) if args.only else None
    with Lab(links=1, ipv6=False) as lab:
        run_receive(lab, rounds, seconds, args.rate, only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
