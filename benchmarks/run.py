"""mcastio benchmarks: ``python benchmarks/run.py`` (``--quick`` for a short run).

First the receive fast path's three tables (``benchmarks/fast.py``): CPU per
datagram under a 100 kpps flood, latency at 1 kpps, and the saturating rate
under two senders, each against a plain Python recvmsg loop and uvloop's
DatagramProtocol in the same run.

Builds its own network-namespace lab (needs root, or ``unshare -rnm``), floods one
link from the peer with iperf (iperf2) and runs every receiver side by side in the
same run, several rounds, printing medians and ratios. Then measures send_all
against plain sendto calls over 1, 8 and 64 interfaces, the memory of a stalled
consumer under a flood, the idle CPU of an endpoint and, when
``benchmarks/join_latency.py`` exists, join latency.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))
# fast.py imports this script as "run": one module, so it sees --compare-with's tree.
sys.modules.setdefault("run", sys.modules[__name__])

from mcastio.testing import Lab, lab_support  # noqa: E402

GROUP = "239.255.66.1"
#: SO_RCVBUF for the "equal buffers" table: mcastio's default, given to everyone.
EQUAL_RCVBUF = 2 * 1024 * 1024
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


#: Another source tree of mcastio (``--compare-with``): its receivers and sends run
#: beside this tree's in the same run, labelled with the tree's name.
OTHER_TREES: dict[str, Path] = {}


def tree_of(variant: str) -> tuple[Path, str]:
    """(source tree, plain variant) for ``variant``, which may be ``other:<variant>``."""
    if variant.startswith("other:"):
        return OTHER_TREES["other"], variant.removeprefix("other:")
    return ROOT, variant


class Child:
    """A receiver process in the lab's host namespace."""

    def __init__(
        self,
        lab: Lab,
        variant: str,
        ifname: str,
        rcvbuf: int | None = None,
        env_extra: dict[str, str] | None = None,
    ) -> None:
        tree, variant = tree_of(variant)
        env = dict(os.environ, PYTHONPATH=str(tree))
        for key in ("BENCH_RCVBUF", "BENCH_LATENCY", "BENCH_COALESCE", "MCASTIO_RECVMMSG"):
            env.pop(key, None)
        env.pop("MCASTIO_PURE", None)
        if rcvbuf is not None:
            env["BENCH_RCVBUF"] = str(rcvbuf)
        # "VARIANT+recvmsg": mcastio's plain recvmsg drain; "+nodelay": coalesce_delay=0;
        # "+delay=MS": coalesce_delay=MS/1000; "+pure": the pure-Python path
        # (MCASTIO_PURE=1), else the compiled one where built.
        variant, *modifiers = variant.split("+")
        for modifier in modifiers:
            if modifier.startswith("delay="):
                env["BENCH_COALESCE"] = str(float(modifier.removeprefix("delay=")) / 1000)
        if "recvmsg" in modifiers:
            env["MCASTIO_RECVMMSG"] = "0"
        if "pure" in modifiers or "recvmsg" in modifiers:
            env["MCASTIO_PURE"] = "1"
        if "nodelay" in modifiers:
            env["BENCH_COALESCE"] = "0"
        env.update(env_extra or {})
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


def measure_receive(
    lab: Lab, series: Series, rate: int, seconds: float, rcvbuf: int | None
) -> None:
    child = Child(lab, series.variant, lab.link[0].host_if, rcvbuf)
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


def paired_ratios(
    mine: Sequence[Mapping[str, float]], theirs: Sequence[Mapping[str, float]], key: str
) -> list[float]:
    """``key``'s ratio in each round, this row over the other (rounds pair up in order).

    Paired, not a ratio of medians: both ran in the same round, under the same load,
    so the load cancels out of each pair. A round where either lacks ``key``, or
    where the other's value is zero, is left out.
    """
    return [
        a[key] / b[key]
        for a, b in zip(mine, theirs, strict=False)
        if key in a and key in b and b[key] > 0
    ]


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


def run_receive(
    lab: Lab,
    rounds: int,
    seconds: float,
    rate: int,
    only: set[str] | None,
    rcvbuf: int | None = None,
) -> None:
    all_series = [
        Series(label, variant, base)
        for label, variant, base in RECEIVERS
        if only is None or variant in only
    ]
    if OTHER_TREES:
        name = OTHER_TREES["other"].name
        all_series += [
            Series(f"{s.label} [{name}]", f"other:{s.variant}", s.baseline)
            for s in list(all_series)
            if "mcastio" in s.variant
        ]
    for s in all_series:
        s.skipped = missing_module(s.variant)
    buffers = (
        "each receiver's default SO_RCVBUF"
        if rcvbuf is None
        else f"SO_RCVBUF={rcvbuf} requested by every receiver"
    )
    print(
        f"\n## receive: {rounds} rounds x {seconds:g} s at {rate} datagrams/s of 64 bytes,"
        f" {buffers}",
        flush=True,
    )
    for r in range(rounds):
        # Rotate the order so slow drift on a shared machine spreads over all rows.
        order = all_series[r % len(all_series) :] + all_series[: r % len(all_series)]
        for s in order:
            if s.skipped is None:
                measure_receive(lab, s, rate, seconds, rcvbuf)
        print(f"  round {r + 1}/{rounds} done", flush=True)
    print("\n".join(receive_table(all_series)), flush=True)


def send_in_child(lab: Lab, tree: Path, names: Sequence[str], rounds: int, sends: int) -> Any:
    """sends.run with mcastio imported from ``tree``, in a child in the host namespace."""
    code = (
        "import json, sys, sends\n"
        f"print(json.dumps(sends.run({GROUP!r}, {PORT}, {list(names)!r}, {rounds}, {sends})))"
    )
    env = dict(os.environ, PYTHONPATH=f"{tree}{os.pathsep}{HERE}")
    proc = lab.popen(
        lab.host, sys.executable, "-c", code, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=env,
    )  # fmt: skip
    out, err = proc.communicate(timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"send benchmark in {tree} failed: {err.decode()[-300:]}")
    return json.loads(out)


def run_send(rounds: int, sends: int) -> None:
    import sends as send_bench

    if OTHER_TREES:
        run_send_compared(rounds, sends)
        return
    print("\n## send_all over N interfaces vs N plain sendto calls (µs per call, medians)")
    rows = [
        "| N | N x sendto | send_all_nowait | ratio | await send_all | ratio"
        " | coroutine with N x sendto | ratio await/coroutine |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    with Lab(links=64, ipv6=False) as lab, lab.inside():
        for n in (1, 8, 64):
            names = [link.host_if for link in lab.link[:n]]
            r = send_bench.run(GROUP, PORT, names, rounds, sends)
            rows.append(
                f"| {n} | {r['plain']:.1f} | {r['nowait']:.1f} | {r['ratio_nowait']:.2f}"
                f" | {r['async']:.1f} | {r['ratio_async']:.2f} | {r['plain_async']:.1f}"
                f" | {r['ratio_async_vs_async']:.2f} |"
            )
    print("\n".join(rows), flush=True)


def run_send_many(rounds: int, count: int) -> None:
    """CPU per datagram of bursts to one group: sendto loop, send_all, send_many, GSO."""
    import sends as send_bench

    import mcastio

    print(
        f"\n## batched sends: {count} datagrams of 64 bytes in bursts of 64 to one group out"
        f" of one interface, {rounds} interleaved rounds (CPU µs per datagram, medians;"
        f" drain {mcastio.drain_path})",
        flush=True,
    )
    with Lab(links=1, ipv6=False) as lab, lab.inside():
        samples = asyncio.run(
            send_bench.burst_cost(GROUP, PORT, lab.link[0].host_if, rounds, count)
        )
    rows = ["| way | CPU µs/datagram | ratio to sendto loop |", "|---|---:|---:|"]
    labels = {
        "sendto": "sendto loop (one socket)",
        "send_all": "await send_all per datagram",
        "sendmmsg": "await send_many (sendmmsg)",
        "gso": "await send_many (UDP GSO)",
    }
    for key, label in labels.items():
        ratios = [a / b for a, b in zip(samples[key], samples["sendto"], strict=True)]
        rows.append(f"| {label} | {median(samples[key]):.2f} | {median(ratios):.2f} |")
    print("\n".join(rows), flush=True)
    if "sendto_refused" in samples:
        print(f"(the sendto loop met a full buffer {int(samples['sendto_refused'][0])} times)")


def run_send_compared(rounds: int, sends: int) -> None:
    """This tree's send_all ratios beside another tree's, round by round in one run."""
    other = OTHER_TREES["other"]
    print(
        f"\n## send_all ratios to plain sendto: this tree vs {other.name}"
        f" ({rounds} alternating rounds, medians)"
    )
    rows = [
        "| N | wall: nowait | [other] | await | [other]"
        " | CPU: nowait | [other] | this/other | await | [other] | this/other |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    with Lab(links=64, ipv6=False) as lab:
        for n in (1, 8, 64):
            names = [link.host_if for link in lab.link[:n]]
            mine: list[dict[str, float]] = []
            theirs: list[dict[str, float]] = []
            for _ in range(rounds):
                mine.append(send_in_child(lab, ROOT, names, 3, sends))
                theirs.append(send_in_child(lab, other, names, 3, sends))
            cells = []
            for key in ("ratio_nowait", "ratio_async"):
                cells += [median([r[key] for r in mine]), median([r[key] for r in theirs])]
            for key in ("cpu_ratio_nowait", "cpu_ratio_async"):
                # Paired by round: both trees ran back to back, under the same load.
                pairs = paired_ratios(mine, theirs, key)
                cells += [
                    median([r[key] for r in mine]),
                    median([r[key] for r in theirs]),
                    median(pairs),
                ]
            rows.append(f"| {n} | " + " | ".join(f"{c:.2f}" for c in cells) + " |")
    print("\n".join(rows), flush=True)
    print(
        "(ratios to N plain sendto calls in the same child. CPU is the sending\n"
        "thread's user + system time, which a busy machine inflates less than the\n"
        "wall time; this/other pairs the two trees' rounds, run back to back.)"
    )


def run_memory(lab: Lab, rate: int, durations: Sequence[float]) -> None:
    print("\n## memory: a subscriber that never reads, under the flood (queue_size=1024)")
    rows = [
        "| flood | sent | received | dropped | queued | peak RSS |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for seconds in durations:
        child = Child(lab, "stalled", lab.link[0].host_if)
        child.wait_ready()
        sent = flood(lab, rate, seconds)
        time.sleep(0.3)
        r = child.stop()
        rows.append(
            f"| {seconds:g} s | {sent} | {int(r['received'])} | {int(r['dropped'])}"
            f" | {int(r['queued'])} | {r['maxrss_kib'] / 1024:.1f} MiB |"
        )
    print("\n".join(rows), flush=True)


def run_idle(lab: Lab, seconds: float) -> None:
    child = Child(lab, "idle", lab.link[0].host_if)
    child.wait_ready()
    time.sleep(seconds)
    r = child.stop()
    print(
        f"\n## idle: endpoint on {len(lab.link)} links with a waiting reader, {seconds:g} s:"
        f" {r['cpu'] * 1000:.1f} ms CPU ({r['cpu'] / seconds * 100:.3f}% of a core)",
        flush=True,
    )


def run_join_latency(trials: int) -> None:
    module = importlib.import_module("join_latency")
    result: dict[str, float] = module.measure(trials=trials)
    print(f"\n## join latency ({trials} trials)")
    for key, value in result.items():
        print(f"  {key}: {value:.4g}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="3 short rounds")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=None, help="flood length per receiver")
    parser.add_argument("--rate", type=int, default=100_000, help="datagrams per second")
    parser.add_argument(
        "--only",
        default=None,
        help="comma-separated receiver variants (CPU and latency tables: e.g."
        " mcastio-batch,mcastio-batch+pure,mcastio-protocol+delay=4; their two baselines"
        " always run)",
    )
    parser.add_argument(
        "--sections",
        default="cpu,latency,saturation,buffers,sendmany,receive,equal,send,memory,idle,join",
        help="comma-separated: cpu,latency,saturation,buffers,sendmany,receive,equal,send,"
        "memory,idle,join",
    )
    parser.add_argument(
        "--compare-with",
        type=Path,
        default=None,
        metavar="TREE",
        help="another mcastio source tree (e.g. a git worktree of an earlier commit) whose"
        " receivers and send_all run beside this tree's in the same run",
    )
    args = parser.parse_args(argv)
    if args.compare_with is not None:
        if not (args.compare_with / "mcastio" / "__init__.py").is_file():
            parser.error(f"{args.compare_with} holds no mcastio package")
        OTHER_TREES["other"] = args.compare_with.resolve()
    rounds = args.rounds or (3 if args.quick else 5)
    seconds = args.seconds or (1.0 if args.quick else 2.0)

    reason = lab_support()
    if reason is not None:
        print(
            f"benchmarks build a network-namespace lab, so run them as root (sudo) or under"
            f" 'unshare -rnm': {reason}",
            file=sys.stderr,
        )
        return 2
    if shutil.which("iperf") is None:
        print("benchmarks need iperf (iperf2): apt-get install iperf", file=sys.stderr)
        return 2
    only = set(args.only.split(",")) if args.only else None
    sections = set(args.sections.split(","))
    from machine import machine

    print(machine())
    with Lab(links=3, ipv6=False) as lab:
        if sections & {"cpu", "latency", "saturation", "buffers"}:
            import fast

            fast.run_all(lab, sorted(sections), rounds, seconds, args.rate, only)
        if "receive" in sections:
            run_receive(lab, rounds, seconds, args.rate, only)
        if "equal" in sections:
            equal = {"raw", "stdlib", "mcastio-aiter", "mcastio-batch", "uvloop:stdlib"}
            equal |= {"uvloop:mcastio-aiter"}
            run_receive(lab, rounds, seconds, args.rate, only or equal, EQUAL_RCVBUF)
        if "memory" in sections:
            run_memory(lab, args.rate, (1.0, 3.0) if args.quick else (2.0, 6.0))
        if "idle" in sections:
            run_idle(lab, 2.0 if args.quick else 5.0)
    if "sendmany" in sections:
        run_send_many(rounds, 20480 if args.quick else 65536)
    if "send" in sections:
        run_send(rounds, 2000 if args.quick else 10000)
    if "join" in sections:
        run_join_latency(3 if args.quick else 10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
