"""``mcastio relay`` between real segments: loops, rates, link flaps, and real peers.

One lab for the module: three segments (Linux bridges A, B, C) with a plain host
on each (a1, b1, c1) and four relay hosts: r1 and r2 both between A and B (in
parallel), r3 between B and C, r4 between C and A (with r1, a ring). Each test
starts the relays it needs as ``mcastio relay`` processes, stops them with
SIGTERM and reads their ``--json`` counters. The per-segment counts are printed
(``pytest -s``) for the record.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Iterator, Sequence

import pytest

from mcastio.testing import Lab, lab_support
from tests.conftest import require
from tests.relaylab import Counter4, RelayLab, RelayProc, sender

pytestmark = pytest.mark.lab

GROUP, PORT = "239.255.0.19", 4019
TARGET = f"{GROUP}:{PORT}"


@pytest.fixture(scope="module")
def rl() -> Iterator[RelayLab]:
    require(lab_support())
    lab = Lab(links=1, ipv6=False)
    lab.build()
    try:
        rl = RelayLab(lab)
        rl.build()
        for member, host, segs in (
            ("a1", 2, "A"),
            ("b1", 2, "B"),
            ("c1", 2, "C"),
            ("r1", 11, "AB"),
            ("r2", 12, "AB"),
            ("r3", 13, "BC"),
            ("r4", 14, "CA"),
        ):
            rl.add(member, host, list(segs))
        rl.route("a1", "10.19.1.11")
        rl.route("b1", "10.19.2.11")
        rl.route("c1", "10.19.3.13")
        yield rl
    finally:
        lab.destroy()


def start(rl: RelayLab, members: Sequence[str], *args: str) -> list[RelayProc]:
    relays = [rl.relay(m, *args) for m in members]
    try:
        for relay in relays:
            relay.wait_ready()
    except BaseException:
        for relay in relays:
            relay.proc.kill()
            relay.proc.communicate()
        raise
    # The endpoints are joined once "relaying" is printed; give the first
    # membership reports a moment on the bridges (snooping is off: not needed).
    return relays


def stream(
    rl: RelayLab, senders: Sequence[tuple[str, str]], count: int, interval: float
) -> list[bytes]:
    """``count`` distinct datagrams from each (member, segment), interleaved."""
    socks = [(m, sender(rl, m, seg)) for m, seg in senders]
    sent = []
    try:
        for i in range(count):
            for member, sock in socks:
                payload = f"{member} {i:04d}".encode()
                sock.sendto(payload, (GROUP, PORT))
                sent.append(payload)
            time.sleep(interval)
    finally:
        for _, sock in socks:
            sock.close()
    return sent


def test_parallel_relays_carry_each_datagram_once(rl: RelayLab) -> None:
    counters = {seg: Counter4(rl, m, seg, GROUP, PORT) for m, seg in (("a1", "A"), ("b1", "B"))}
    try:
        relays = start(rl, ["r1", "r2"], TARGET)
        sent = stream(rl, [("a1", "A"), ("b1", "B")], 25, 0.03)
        time.sleep(0.5)
        stats = [r.stop() for r in relays]
        counts = {seg: c.drain() for seg, c in counters.items()}
    finally:
        for c in counters.values():
            c.close()
    print(f"\nparallel: sent {len(sent)}", {s: _summary(c, sent) for s, c in counts.items()})
    print("  r1", stats[0], "\n  r2", stats[1])
    for seg, got in counts.items():
        assert set(got) == set(sent), (seg, set(sent) - set(got))
        assert max(got.values()) == 1, (seg, [p for p, n in got.items() if n > 1])
    forwarded = sum(d["forwarded"] for s in stats for d in s.values())
    assert forwarded == len(sent)
    # The relay that waited heard the other's copy and held its own back.
    assert sum(d["dropped_loop"] for s in stats for d in s.values()) >= len(sent)


def test_ring_of_three_carries_each_datagram_once(rl: RelayLab) -> None:
    where = (("a1", "A"), ("b1", "B"), ("c1", "C"))
    counters = {seg: Counter4(rl, m, seg, GROUP, PORT) for m, seg in where}
    try:
        relays = start(rl, ["r1", "r3", "r4"], TARGET)
        sent = stream(rl, list(where), 20, 0.03)
        time.sleep(0.6)
        stats = [r.stop() for r in relays]
        counts = {seg: c.drain() for seg, c in counters.items()}
    finally:
        for c in counters.values():
            c.close()
    print(f"\nring: sent {len(sent)}", {s: _summary(c, sent) for s, c in counts.items()})
    for relay, s in zip(("r1", "r3", "r4"), stats, strict=True):
        print(f"  {relay}", s)
    for seg, got in counts.items():
        assert set(got) == set(sent), (seg, set(sent) - set(got))
        assert max(got.values()) == 1, (seg, [p for p, n in got.items() if n > 1])
    # Each original reaches the two other segments: one forward each.
    assert sum(d["forwarded"] for s in stats for d in s.values()) == 2 * len(sent)


def test_flood_is_cut_to_the_rate_limit(rl: RelayLab) -> None:
    counter = Counter4(rl, "b1", "B", GROUP, PORT)
    try:
        (relay,) = start(rl, ["r1"], TARGET, "--rate", "20")
        began = time.monotonic()
        sent = stream(rl, [("a1", "A")], 400, 0.001)
        elapsed = time.monotonic() - began
        time.sleep(0.3)
        stats = relay.stop()
        got = counter.drain()
    finally:
        counter.close()
    a_to_b = stats["segA->segB"]
    print(f"\nflood: sent {len(sent)} in {elapsed:.2f} s, on B {sum(got.values())}", a_to_b)
    # Burst 40, then 20 a second.
    assert 40 <= sum(got.values()) <= 40 + 20 * (elapsed + 0.3) + 1
    assert max(got.values()) == 1
    assert a_to_b["forwarded"] == sum(got.values())
    assert a_to_b["dropped_rate"] == len(sent) - a_to_b["forwarded"]


def test_forwarding_resumes_after_a_link_flap(rl: RelayLab) -> None:
    counter = Counter4(rl, "b1", "B", GROUP, PORT)
    out = sender(rl, "a1", "A")
    # Sent by r1 itself, straight onto B: tells when the link carries traffic again.
    probe = sender(rl, "r1", "B", loop=False)
    try:
        (relay,) = start(rl, ["r1"], TARGET)
        r1 = rl.ns("r1")
        for i in range(10):
            out.sendto(b"before %d" % i, (GROUP, PORT))
            time.sleep(0.02)
        # Every forward held back has left before the link goes.
        time.sleep(0.3)
        rl.lab.sh(r1, "ip link set segB down")
        for i in range(10):
            out.sendto(b"down %d" % i, (GROUP, PORT))
            time.sleep(0.02)
        rl.lab.sh(r1, "ip link set segB up")
        up = time.monotonic()
        for i in range(150):
            out.sendto(b"after %03d" % i, (GROUP, PORT))
            with contextlib.suppress(OSError):
                probe.sendto(b"probe %03d" % i, (GROUP, PORT))
            time.sleep(0.02)
            counter.drain()
        time.sleep(0.3)
        stats = relay.stop()
        counter.drain()
    finally:
        out.close()
        probe.close()
        counter.close()
    first = {
        kind: min((t for t, d in counter.arrivals if d.startswith(kind)), default=None)
        for kind in (b"after", b"probe")
    }
    assert first[b"after"] is not None, stats
    assert first[b"probe"] is not None
    resumed = first[b"after"] - first[b"probe"]
    before = sum(1 for _, d in counter.arrivals if d.startswith(b"before"))
    print(
        f"\nflap: before {before}/10; link up, carrying again after"
        f" {first[b'probe'] - up:.3f} s; relay forwarding {resumed:.3f} s after that"
    )
    print("  r1", stats)
    assert before == 10
    assert resumed < 1.0
    assert max(counter.counts.values()) == 1


def _summary(got: Counter[bytes], sent: Sequence[bytes]) -> str:
    once = sum(1 for p in sent if got[p] == 1)
    more = sum(1 for p in sent if got[p] > 1)
    return f"{once} once, {more} more than once, {len(sent) - once - more} missing"
