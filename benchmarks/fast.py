"""The receive fast path's three tables, for ``run.py``: CPU, latency, saturating rate.

Every row runs once per round in a rotating order, in the same run as its
baselines (a plain Python ``recvmsg`` loop with ``IP_PKTINFO`` building
``(data, source, ifindex)``, and uvloop's ``DatagramProtocol``); the tables show
medians over rounds, and ratios are medians of per-round ratios.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from run import (
    GROUP,
    HERE,
    OTHER_TREES,
    PORT,
    Child,
    flood,
    median,
    missing_module,
    paired_ratios,
)

from mcastio.testing import Lab

PLAIN = "plain"
UVLOOP = "uvloop:stdlib"

#: (label, variant) of the CPU table; the first two are the baselines. "compiled"
#: rows use mcastio._platform.linux._cdrain; "pure" rows run with MCASTIO_PURE=1.
CPU_ROWS: tuple[tuple[str, str], ...] = (
    ("plain recvmsg loop, IP_PKTINFO -> (data, source, ifindex)", PLAIN),
    ("uvloop DatagramProtocol (no metadata)", UVLOOP),
    ("stdlib DatagramProtocol (no metadata)", "stdlib"),
    ("mcastio compiled batches()", "mcastio-batch"),
    ("mcastio compiled async for", "mcastio-aiter"),
    ("mcastio compiled protocol hook", "mcastio-protocol"),
    ("mcastio pure batches()", "mcastio-batch+pure"),
    ("mcastio pure async for", "mcastio-aiter+pure"),
    ("mcastio pure protocol hook", "mcastio-protocol+pure"),
    ("uvloop mcastio compiled batches()", "uvloop:mcastio-batch"),
    ("mcastio pure batches(), recvmsg drain", "mcastio-batch+recvmsg"),
)
LATENCY_ROWS: tuple[tuple[str, str], ...] = (
    ("plain recvmsg loop", PLAIN),
    ("uvloop DatagramProtocol", UVLOOP),
    ("mcastio compiled batches()", "mcastio-batch"),
    ("mcastio compiled async for", "mcastio-aiter"),
    ("mcastio compiled protocol hook", "mcastio-protocol"),
    ("mcastio pure batches()", "mcastio-batch+pure"),
    ("mcastio compiled batches(), coalesce_delay=0", "mcastio-batch+nodelay"),
)
SATURATION_ROWS: tuple[tuple[str, str], ...] = (
    ("plain recvmsg loop", PLAIN),
    ("uvloop DatagramProtocol", UVLOOP),
    ("mcastio compiled batches()", "mcastio-batch"),
    ("mcastio compiled async for", "mcastio-aiter"),
    ("mcastio compiled protocol hook", "mcastio-protocol"),
    ("mcastio pure batches()", "mcastio-batch+pure"),
)


@dataclass
class Row:
    label: str
    variant: str
    runs: list[dict[str, float]] = field(default_factory=list)
    skipped: str | None = None

    def med(self, key: str) -> float:
        return median([r[key] for r in self.runs if key in r])


Measure = Callable[[Lab, str], dict[str, float]]


def print_table(
    columns: Sequence[str], rows: Sequence[Row], cells: Callable[[Row], list[str]]
) -> None:
    """A markdown table, a line per receiver; a skipped one says why in its last column."""
    out = [
        "| receiver | " + " | ".join(columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for row in rows:
        shown = ["-"] * (len(columns) - 1) + [row.skipped] if row.skipped else cells(row)
        out.append(f"| {row.label} | " + " | ".join(shown) + " |")
    print("\n".join(out), flush=True)


def rounds_of(lab: Lab, rows: list[Row], rounds: int, measure: Measure) -> None:
    for row in rows:
        row.skipped = missing_module(row.variant)
    live = [row for row in rows if row.skipped is None]
    for r in range(rounds):
        # Rotate the order so slow drift on a shared machine spreads over all rows.
        for row in live[r % len(live) :] + live[: r % len(live)]:
            try:
                row.runs.append(measure(lab, row.variant))
            except RuntimeError as exc:
                row.skipped = f"cannot run: {exc}"
        print(f"  round {r + 1}/{rounds} done", flush=True)


def ratio(row: Row, base: Row, key: str) -> str:
    """Median of per-round ratios of ``key`` (rounds pair up in order)."""
    pairs = paired_ratios(row.runs, base.runs, key)
    return f"{median(pairs):.2f}" if pairs and not base.skipped else "-"


def _run_child(
    lab: Lab, variant: str, ifname: str, send: Callable[[], int], env: dict[str, str] | None = None
) -> dict[str, float]:
    child = Child(lab, variant, ifname, env_extra=env)
    child.wait_ready()
    sent = send()
    # Let the receiver finish what is already in its socket buffer.
    time.sleep(0.3)
    result = child.stop()
    # iperf2 ends a UDP stream with a few extra FIN datagrams beyond "Sent N".
    received = min(result["received"], sent)
    result.update(sent=sent, fraction=received / sent if sent else 0.0)
    if received:
        result["cpu_us"] = result["cpu"] / received * 1e6
        result["user_us"] = result.get("user", 0.0) / received * 1e6
        result["sys_us"] = result.get("sys", 0.0) / received * 1e6
    return result


def per_read(row: Row) -> str:
    """Datagrams per deferred read, the median over rounds ("-" where none)."""
    sizes = [r["received"] / r["deferred_reads"] for r in row.runs if r.get("deferred_reads")]
    return f"{median(sizes):.0f}" if sizes else "-"


def cpu_rows(only: set[str] | None = None) -> list[tuple[str, str]]:
    """The CPU table's rows: both baselines, then the mcastio rows in ``only`` (all when
    None), each followed by the same row of the ``--compare-with`` tree when given."""
    rows = list(CPU_ROWS[:2])
    for label, variant in CPU_ROWS[2:]:
        if only is not None and variant not in only:
            continue
        rows.append((label, variant))
        if "mcastio" in variant and "other" in OTHER_TREES:
            rows.append((f"{label} [{OTHER_TREES['other'].name}]", f"other:{variant}"))
    # Variants of --only that are no row here, e.g. mcastio-protocol+delay=2.
    known = {variant for _label, variant in CPU_ROWS}
    for variant in sorted(only or ()):
        if variant not in known:
            rows.append((f"mcastio {variant}", variant))
            if "other" in OTHER_TREES:
                other = OTHER_TREES["other"].name
                rows.append((f"mcastio {variant} [{other}]", f"other:{variant}"))
    return rows


def run_cpu(lab: Lab, rounds: int, seconds: float, rate: int, only: set[str] | None = None) -> None:
    print(
        f"\n## CPU per datagram: {rounds} rounds x {seconds:g} s at {rate} datagrams/s"
        " of 64 bytes (iperf), one link",
        flush=True,
    )
    rows = [Row(label, variant) for label, variant in cpu_rows(only)]

    def measure(lab: Lab, variant: str) -> dict[str, float]:
        return _run_child(lab, variant, lab.link[0].host_if, lambda: flood(lab, rate, seconds))

    rounds_of(lab, rows, rounds, measure)
    plain, uv = rows[0], rows[1]
    columns = ["received", "CPU µs/datagram", "user", "system", "ratio to plain loop"]
    columns += ["ratio to uvloop", "datagrams per read"]
    print_table(
        columns,
        rows,
        lambda row: [
            f"{row.med('fraction') * 100:.1f}%",
            f"{row.med('cpu_us'):.2f}",
            f"{row.med('user_us'):.2f}",
            f"{row.med('sys_us'):.2f}",
            ratio(row, plain, "cpu_us"),
            ratio(row, uv, "cpu_us"),
            per_read(row),
        ],
    )
    print_against_other(rows)
    dropped = [
        f"{row.label}: {', '.join(str(int(r['kernel_dropped'])) for r in row.runs)}"
        for row in rows
        if any(r.get("kernel_dropped") for r in row.runs)
    ]
    # A socket that overflowed once pays for the drop count on every later datagram
    # where the kernel stamps it (SO_RXQ_OVFL): benchmarks/dropcost.py.
    print("kernel drops per round: " + ("; ".join(dropped) or "none in any mcastio row"))


def print_against_other(rows: list[Row]) -> None:
    """Each mcastio row's CPU per datagram over the same row of the --compare-with tree,
    round by round (the two ran in the same round, under the same load), median."""
    by_variant = {row.variant: row for row in rows}
    lines = []
    for row in rows:
        other = by_variant.get(f"other:{row.variant}")
        if other is None:
            continue
        pairs = paired_ratios(row.runs, other.runs, "cpu_us")
        if pairs:
            spread = f"{min(pairs):.2f}-{max(pairs):.2f}"
            lines.append(f"  {row.label}: {median(pairs):.2f} (rounds {spread})")
    if lines:
        print("CPU per datagram, this tree / the other, paired by round:")
        print("\n".join(lines))


def stamped(lab: Lab, rate: int, seconds: float, burst: int = 1) -> int:
    link = lab.link[0]
    argv = [str(HERE / "stamped_sender.py"), GROUP, str(PORT), link.peer_addr, str(rate)]
    argv += [str(seconds), str(burst)]
    proc = lab.run(link.peer_ns, sys.executable, *argv, timeout=seconds + 30)
    return _sent(proc.stdout)


def _sent(text: str) -> int:
    match = re.search(r"Sent (\d+) datagrams", text)
    if match is None:
        raise RuntimeError(f"cannot read the sent count from: {text[-300:]}")
    return int(match.group(1))


def deferred(row: Row) -> str:
    """Reads mcastio deferred under coalescing, the most in any round ("-" for others)."""
    counts = [r["deferred_reads"] for r in row.runs if "deferred_reads" in r]
    return f"{max(counts):.0f}" if counts else "-"


def latency_rows(only: set[str] | None = None) -> list[tuple[str, str]]:
    """The latency table's rows: both baselines, then the mcastio rows in ``only`` (all
    when None), then variants of ``only`` that are no row here (e.g. ``+delay=4``)."""
    if only is None:
        return list(LATENCY_ROWS)
    rows = [*LATENCY_ROWS[:2], *(row for row in LATENCY_ROWS[2:] if row[1] in only)]
    known = {variant for _label, variant in LATENCY_ROWS}
    rows += [(f"mcastio {v}", v) for v in sorted(only) if v not in known]
    return rows


def run_latency(
    lab: Lab,
    rounds: int,
    seconds: float,
    rate: int = 1000,
    burst: int = 1,
    only: set[str] | None = None,
) -> None:
    spacing = "evenly spaced" if burst == 1 else f"in bursts of {burst} back to back"
    print(
        f"\n## latency: {rounds} rounds x {seconds:g} s at {rate} datagrams/s, {spacing},"
        " from sendto in the peer to the consumer (µs)",
        flush=True,
    )
    rows = [Row(label, variant) for label, variant in latency_rows(only)]

    def measure(lab: Lab, variant: str) -> dict[str, float]:
        send = lambda: stamped(lab, rate, seconds, burst)  # noqa: E731
        return _run_child(lab, variant, lab.link[0].host_if, send, {"BENCH_LATENCY": "1"})

    rounds_of(lab, rows, rounds, measure)
    plain = rows[0]
    columns = ["received", "p50", "p99", "p50 ratio to plain loop", "p99 ratio to plain loop"]
    print_table(
        [*columns, "deferred reads"],
        rows,
        lambda row: [
            f"{row.med('fraction') * 100:.1f}%",
            f"{row.med('p50_us'):.0f}",
            f"{row.med('p99_us'):.0f}",
            ratio(row, plain, "p50_us"),
            ratio(row, plain, "p99_us"),
            deferred(row),
        ],
    )


def two_floods(lab: Lab, rate: int, seconds: float) -> int:
    """iperf from the peers of links 0 and 1 at once; the datagrams both sent."""
    argv = ["iperf", "-u", "-c", GROUP, "-p", str(PORT), "-T", "1", "-l", "64"]
    argv += ["-b", f"{rate}pps", "-t", str(seconds)]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    procs = [lab.popen(link.peer_ns, *argv, **pipes) for link in lab.link[:2]]
    return sum(_sent(p.communicate(timeout=seconds + 30)[0].decode()) for p in procs)


def run_saturation(lab: Lab, rounds: int, seconds: float, rate: int) -> None:
    print(
        f"\n## saturating rate: {rounds} rounds x {seconds:g} s, two iperf senders at up to"
        f" {rate} datagrams/s each (links 0 and 1), receivers joined on both",
        flush=True,
    )
    rows = [Row(label, variant) for label, variant in SATURATION_ROWS]
    ifnames = f"{lab.link[0].host_if},{lab.link[1].host_if}"

    def measure(lab: Lab, variant: str) -> dict[str, float]:
        result = _run_child(lab, variant, ifnames, lambda: two_floods(lab, rate, seconds))
        result["sent_rate"] = result["sent"] / seconds
        result["rate"] = min(result["received"], result["sent"]) / seconds
        return result

    rounds_of(lab, rows, rounds, measure)
    plain = rows[0]
    print_table(
        ["offered (sent/s)", "received/s", "received", "ratio to plain loop"],
        rows,
        lambda row: [
            f"{row.med('sent_rate'):.0f}",
            f"{row.med('rate'):.0f}",
            f"{row.med('fraction') * 100:.1f}%",
            ratio(row, plain, "rate"),
        ],
    )


def _resident_kib() -> int:
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)


def run_buffers(sizes: Sequence[int] = (64, 1400, 8000, 65000), floods: int = 20) -> None:
    """Resident memory of one endpoint's recvmmsg buffers, read full of each size (loopback)."""
    from mcastio._platform.linux import mmsg as _mmsg

    print(
        f"\n## recvmmsg buffers: resident memory after reading {floods} x {_mmsg.BATCH}"
        " datagrams of each size (loopback, this process)",
        flush=True,
    )
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        rx.bind(("127.0.0.1", 0))
        rx.setblocking(False)
        before = _resident_kib()
        buffers = _mmsg.Buffers(socket.AF_INET)
        rows = [
            f"| virtual size | {len(buffers.memory) / 1024:.0f} KiB |",
            f"| resident after allocation | +{_resident_kib() - before} KiB |",
        ]
        for size in sizes:
            for _ in range(floods):
                for _ in range(_mmsg.BATCH):
                    tx.sendto(b"\xa5" * size, rx.getsockname())
                while buffers.receive(rx.fileno()):
                    pass
            rows.append(
                f"| resident after {size}-byte datagrams | +{_resident_kib() - before} KiB |"
            )
    finally:
        rx.close()
        tx.close()
    print("| | |\n|---|---:|\n" + "\n".join(rows), flush=True)


def run_all(
    lab: Lab,
    sections: Sequence[str],
    rounds: int,
    seconds: float,
    rate: int,
    only: set[str] | None = None,
) -> None:
    if "cpu" in sections:
        run_cpu(lab, rounds, seconds, rate, only)
    if "latency" in sections:
        run_latency(lab, max(3, rounds - 2), seconds, only=only)
        run_latency(lab, max(3, rounds - 2), seconds, burst=100, only=only)
    if "saturation" in sections:
        run_saturation(lab, max(3, rounds - 2), seconds, 250_000)
    if "buffers" in sections:
        run_buffers()
