"""Running counts for ``listen``: per interface, and per sequenced stream.

Pure: datagrams and header values go in, numbers and text come out. Memory is
bounded, since everything here is fed from the network.
"""

from __future__ import annotations

from collections.abc import Sequence

from .fmt import WIDTH, plural

__all__ = ["Drops", "SeqTracker", "Tally", "progress_line"]

# Distinct sources remembered per interface: past this the summary says "1024+".
_MAX_SOURCES = 1024
# Sequenced streams tracked at once; more are counted in the interface totals only.
_MAX_STREAMS = 256
# Sequence numbers remembered for duplicate detection, behind the highest one.
_WINDOW = 4096


class SeqTracker:
    """Loss, duplicates, reordering and one-way delay of one numbered stream."""

    __slots__ = (
        "_seen",
        "delay_max",
        "delay_min",
        "delay_sum",
        "duplicates",
        "highest",
        "lowest",
        "received",
        "reordered",
    )

    def __init__(self) -> None:
        self.received = 0
        self.duplicates = 0
        self.reordered = 0
        self.lowest = -1
        self.highest = -1
        self.delay_min = 0
        self.delay_max = 0
        self.delay_sum = 0
        self._seen: set[int] = set()

    def add(self, seq: int, delay_ns: int) -> str:
        """Count one arrival; returns ``new``, ``duplicate`` or ``reordered``."""
        self.received += 1
        if seq in self._seen:
            self.duplicates += 1
            return "duplicate"
        if self.highest >= 0 and seq < self.highest - _WINDOW:
            # Older than the window: too late to tell a duplicate, so count it as
            # reordered and leave the set alone.
            self.reordered += 1
            return "reordered"
        first = self.highest < 0
        if first or delay_ns < self.delay_min:
            self.delay_min = delay_ns
        if first or delay_ns > self.delay_max:
            self.delay_max = delay_ns
        self.delay_sum += delay_ns
        self._seen.add(seq)
        if first:
            self.lowest = self.highest = seq
            return "new"
        self.lowest = min(self.lowest, seq)
        if seq < self.highest:
            self.reordered += 1
            return "reordered"
        self.highest = seq
        if len(self._seen) > 2 * _WINDOW:
            floor = self.highest - _WINDOW
            self._seen = {s for s in self._seen if s >= floor}
        return "new"

    @property
    def unique(self) -> int:
        return self.received - self.duplicates

    @property
    def expected(self) -> int:
        return 0 if self.highest < 0 else self.highest - self.lowest + 1

    @property
    def lost(self) -> int:
        return max(self.expected - self.unique, 0)

    @property
    def loss_percent(self) -> float:
        return 100.0 * self.lost / self.expected if self.expected else 0.0

    def delay_ms(self) -> tuple[float, float, float] | None:
        """(min, avg, max) one-way delay in ms, or ``None`` before any arrival."""
        unique = self.unique
        if self.highest < 0 or unique <= 0:
            return None
        return (self.delay_min / 1e6, self.delay_sum / unique / 1e6, self.delay_max / 1e6)

    def to_json(self) -> dict[str, object]:
        delay = self.delay_ms()
        return {
            "received": self.received,
            "expected": self.expected,
            "lost": self.lost,
            "loss_percent": round(self.loss_percent, 2),
            "duplicates": self.duplicates,
            "reordered": self.reordered,
            "first_seq": self.lowest,
            "last_seq": self.highest,
            "delay_ms": None
            if delay is None
            else dict(zip(("min", "avg", "max"), (round(d, 3) for d in delay), strict=True)),
        }


class _IfCount:
    __slots__ = ("datagrams", "octets", "sources")

    def __init__(self) -> None:
        self.datagrams = 0
        self.octets = 0
        self.sources: set[str] = set()


class Drops:
    """Datagrams lost on this host: by the kernel (socket buffer full) and in the queue."""

    __slots__ = ("kernel", "queue")

    def __init__(self, kernel: int = 0, queue: int = 0) -> None:
        #: From SO_RXQ_OVFL on the receive sockets.
        self.kernel = kernel
        self.queue = queue


class Tally:
    """Per-interface and per-stream counts for the exit summary (a running tally)."""

    __slots__ = ("counts", "drops", "groups", "interfaces", "octets", "streams", "total")

    def __init__(self, interfaces: Sequence[str] = ()) -> None:
        self.interfaces = list(interfaces)
        self.counts: dict[str, _IfCount] = {}
        #: (interface, source host, stream id) -> tracker.
        self.streams: dict[tuple[str, str, int], SeqTracker] = {}
        #: GROUP:PORT -> [datagrams, bytes], in the order the targets were given.
        self.groups: dict[str, list[int]] = {}
        self.drops = Drops()
        self.total = 0
        self.octets = 0

    def add(self, interface: str, source: str, length: int, target: str | None = None) -> None:
        if target is not None:
            group = self.groups.setdefault(target, [0, 0])
            group[0] += 1
            group[1] += length
        count = self.counts.get(interface)
        if count is None:
            count = self.counts[interface] = _IfCount()
        count.datagrams += 1
        count.octets += length
        self.total += 1
        self.octets += length
        if len(count.sources) < _MAX_SOURCES:
            count.sources.add(source)

    def add_seq(self, interface: str, source: str, stream: int, seq: int, delay_ns: int) -> None:
        key = (interface, source, stream)
        tracker = self.streams.get(key)
        if tracker is None:
            if len(self.streams) >= _MAX_STREAMS:
                return
            tracker = self.streams[key] = SeqTracker()
        tracker.add(seq, delay_ns)

    @property
    def lost(self) -> int:
        return sum(t.lost for t in self.streams.values())

    def _names(self) -> list[str]:
        return list(self.interfaces) + [n for n in self.counts if n not in self.interfaces]

    def summary(self, targets: str) -> str:
        lines = [f"summary for {targets}:"]
        names = self._names()
        for name in names:
            c = self.counts.get(name, _IfCount())
            many = "+" if len(c.sources) >= _MAX_SOURCES else ""
            lines.append(
                f"  {name:<10} {c.datagrams:>7} datagram{'s' if c.datagrams != 1 else ' '} "
                f"{c.octets:>10} byte{'s' if c.octets != 1 else ' '} "
                f"{len(c.sources):>4}{many} source{'s' if len(c.sources) != 1 else ''}"
            )
        if not names:
            lines.append("  (joined on no interface)")
        if len(self.groups) > 1:
            # Several targets: what each brought in, so two groups are never lumped.
            for target, (datagrams, octets) in self.groups.items():
                lines.append(
                    f"  {target:<23} {datagrams:>7} datagram{'s' if datagrams != 1 else ' '} "
                    f"{octets:>10} byte{'s' if octets != 1 else ''}"
                )
        lines.append("  " + self.drops_text())
        if self.streams:
            lines.extend(self.streams_table())
        return "\n".join(lines)

    def drops_text(self) -> str:
        return (
            f"dropped on this host: {self.drops.kernel} by the kernel (socket buffer full), "
            f"{self.drops.queue} in the queue"
        )

    def streams_table(self) -> list[str]:
        """Sequenced streams (``send --seq``): one row per interface and source."""
        lines = [
            "  sequenced streams:          one-way delay ms",
            f"  {'IF':<8} {'SOURCE':<15} {'RECV':>7} {'LOST':>6} {'LOSS':>6} "
            f"{'DUP':>4} {'REORD':>5} {'MIN/AVG/MAX':>17}",
        ]
        for (ifname, source, _stream), t in self.streams.items():
            delay = t.delay_ms()
            delays = "-" if delay is None else "/".join(_ms(d) for d in delay)
            row = (
                f"{t.received:>7} {t.lost:>6} {t.loss_percent:>5.1f}% "
                f"{t.duplicates:>4} {t.reordered:>5} {delays:>17}"
            )
            head = f"  {ifname:<8} {source:<15}"
            if len(head) + 1 + len(row) > WIDTH:
                lines.append(head.rstrip())
                head = " " * 26
            lines.append(f"{head} {row}")
        return lines

    def to_json(self) -> dict[str, object]:
        return {
            "interfaces": {
                name: {
                    "datagrams": (c := self.counts.get(name, _IfCount())).datagrams,
                    "bytes": c.octets,
                    "sources": len(c.sources),
                }
                for name in self._names()
            },
            "groups": {t: {"datagrams": d, "bytes": o} for t, (d, o) in self.groups.items()},
            "datagrams": self.total,
            "bytes": self.octets,
            "kernel_dropped": self.drops.kernel,
            "queue_dropped": self.drops.queue,
            "streams": [
                {"interface": i, "source": s, "stream": st, **t.to_json()}
                for (i, s, st), t in self.streams.items()
            ],
        }


def _ms(value: float) -> str:
    return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"


def progress_line(
    elapsed: float, tally: Tally, last_total: int, last_octets: int, interval: float
) -> str:
    """One line per period: totals so far, the rate over the last period, losses."""
    pps = (tally.total - last_total) / interval if interval > 0 else 0.0
    mbit = (tally.octets - last_octets) * 8 / interval / 1e6 if interval > 0 else 0.0
    kernel = tally.drops.kernel
    line = (
        f"{elapsed:7.1f}s {plural(tally.total, 'datagram'):>17} {pps:9.0f}/s "
        f"{mbit:7.2f} Mbit/s lost {tally.lost} drops {kernel}/{tally.drops.queue}"
    )
    return line[:WIDTH]
