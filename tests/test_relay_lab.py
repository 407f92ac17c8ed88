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
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence

import pytest

import mcastio
from mcastio.testing import Lab, find_tool, lab_support, tool
from mcastio.testing.responders import MiniDlna, responder_support, start_all
from tests.conftest import require, run, wait_for
from tests.relaylab import (
    BROWSE,
    SERVICE_TYPE,
    Counter4,
    RelayLab,
    RelayProc,
    avahi_service,
    sender,
)
from tests.test_peers_lab import MDNS4, MDNS6, MDNS_PORT, answered_name, mdns_query

pytestmark = pytest.mark.lab

GROUP, PORT = "239.255.0.19", 4019
TARGET = f"{GROUP}:{PORT}"


# Hold-down slots (address modulo 8): on A r1 3, r2 7, r4 6; on B r1 3, r2 7, r3 5;
# on C r3 5, r4 6. The parallel relays are 80 ms apart: robust on a busy machine.
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
            ("r2", 15, "AB"),
            ("r3", 13, "BC"),
            ("r4", 14, "CA"),
            ("a2", 3, "A"),
            ("b2", 3, "B"),
        ):
            rl.add(member, host, list(segs))
        rl.route("a1", "10.19.1.11")
        rl.route("b1", "10.19.2.11")
        rl.route("c1", "10.19.3.13")
        rl.route("a2", "10.19.1.11")
        rl.route("b2", "10.19.2.11")
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


def test_one_way_relay_carries_only_from_a_to_b(rl: RelayLab) -> None:
    counters = {seg: Counter4(rl, m, seg, GROUP, PORT) for m, seg in (("a1", "A"), ("b1", "B"))}
    try:
        (relay,) = start(rl, ["r1"], TARGET, "--from", "segA")
        sent = stream(rl, [("a1", "A"), ("b1", "B")], 10, 0.02)
        time.sleep(0.3)
        stats = relay.stop()
        counts = {seg: c.drain() for seg, c in counters.items()}
    finally:
        for c in counters.values():
            c.close()
    print(f"\none way: { ({s: sorted(set(p[:2] for p in c)) for s, c in counts.items()}) }", stats)
    from_a = [p for p in sent if p.startswith(b"a1")]
    from_b = [p for p in sent if p.startswith(b"b1")]
    assert sorted(counts["B"].elements()) == sorted(from_a + from_b)
    assert sorted(counts["A"].elements()) == sorted(from_a)
    assert list(stats) == ["segA->segB"]


def test_flood_is_cut_to_the_rate_limit_and_oversize_and_own_datagrams_stay(
    rl: RelayLab,
) -> None:
    counter = Counter4(rl, "b1", "B", GROUP, PORT)
    try:
        (relay,) = start(rl, ["r1"], TARGET, "--rate", "20", "--max-size", "1000")
        # One datagram over the size limit, and one sent by a program on the relay host.
        big = sender(rl, "a1", "A")
        own = sender(rl, "r1", "A", loop=True)
        try:
            big.sendto(b"big" + bytes(1100), (GROUP, PORT))
            own.sendto(b"own", (GROUP, PORT))
        finally:
            big.close()
            own.close()
        time.sleep(0.2)
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
    assert not any(p.startswith((b"big", b"own")) for p in got)
    assert a_to_b["dropped_rule"] == 1
    assert a_to_b["dropped_loop"] == 1
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
        for i in range(75):
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


def legacy_query(
    rl: RelayLab, member: str, seg: str, name: str, *, v6: bool = False
) -> tuple[str, str | None]:
    """An mDNS legacy-unicast query (from a port other than 5353): (answerer, name answered)."""
    if v6:
        with rl.inside(member):
            sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            index = socket.if_nametoindex(f"seg{seg}")
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
        dest: tuple[object, ...] = (MDNS6, MDNS_PORT, 0, index)
    else:
        sock = sender(rl, member, seg, loop=False)
        dest = (MDNS4, MDNS_PORT)
    try:
        sock.settimeout(0.5)
        for _ in range(8):
            sock.sendto(mdns_query([name], query_id=0x1919), dest)
            with contextlib.suppress(TimeoutError):
                while True:
                    data, source = sock.recvfrom(65536)
                    answered = answered_name(data, [name])
                    if answered is not None and data[:2] == b"\x19\x19":
                        return source[0], answered
    finally:
        sock.close()
    return "", None


def link_local(rl: RelayLab, member: str, seg: str) -> str:
    out = rl.lab.sh(rl.ns(member), f"ip -6 -o addr show dev seg{seg} scope link").stdout
    return out.split()[3].split("/")[0]


def test_mdns_services_and_legacy_queries_cross_the_relay(rl: RelayLab) -> None:
    require(responder_support())
    lab = rl.lab
    (relay,) = start(rl, ["r1"], "mdns")
    daemons = [
        avahi_service(lab, rl.ns("a2"), ["segA"], "hosta"),
        avahi_service(lab, rl.ns("b2"), ["segB"], "hostb"),
    ]
    try:
        start_all(daemons)
        kind = f"{SERVICE_TYPE}.local."
        found = {
            member: lab.run(rl.ns(member), sys.executable, "-c", BROWSE, kind, want, "10").stdout
            for member, want in (("a1", "svc-hostb"), ("b1", "svc-hosta"))
        }
        # avahi-browse on each side asks that side's avahi-daemon, which heard the
        # other side's announcements only through the relay.
        browsed = {
            side: daemon.browse(SERVICE_TYPE) for side, daemon in zip("AB", daemons, strict=True)
        }
        legacy = {
            "a1": legacy_query(rl, "a1", "A", "hostb.local"),
            "b1": legacy_query(rl, "b1", "B", "hosta.local"),
            "a1 v6": legacy_query(rl, "a1", "A", "hostb.local", v6=True),
        }
    finally:
        for daemon in daemons:
            daemon.stop()
        stats = relay.stop()
    print(f"\nmdns: zeroconf on a1: {found['a1'].strip()}; on b1: {found['b1'].strip()}")
    print(f"  avahi-browse: {browsed}")
    print(f"  legacy unicast: {legacy}")
    print("  r1", stats)
    # Found across the relay, with the records that resolve it (server and address).
    assert f"svc-hostb.{kind} hostb.local. 10.19.2.3" in found["a1"]
    assert f"svc-hosta.{kind} hosta.local. 10.19.1.3" in found["b1"]
    # avahi-browse -r -p: "=;iface;IPv4;name;type;domain;host;address;port;txt".
    seen = {side: {(r[3], r[6], r[7]) for r in rows} for side, rows in browsed.items()}
    assert ("svc-hostb", "hostb.local", "10.19.2.3") in seen["A"], browsed
    assert ("svc-hosta", "hosta.local", "10.19.1.3") in seen["B"], browsed
    # Legacy answers come back by unicast from the relay's address on the asker's link.
    assert legacy["a1"] == ("10.19.1.11", "hostb.local")
    assert legacy["b1"] == ("10.19.2.11", "hosta.local")
    assert legacy["a1 v6"] == (link_local(rl, "r1", "A"), "hostb.local")
    assert stats["segA->segB"]["answers"] >= 1
    assert stats["segB->segA"]["answers"] >= 1


def test_ssdp_device_on_b_found_by_a_control_point_on_a(rl: RelayLab) -> None:
    require(responder_support())
    lab = rl.lab
    (relay,) = start(rl, ["r1"], "ssdp")
    dlna = MiniDlna(lab, rl.ns("b2"), "segB", "relayed-dlna")
    try:
        dlna.start()
        client = os.path.join(os.path.dirname(sys.executable), "upnp-client")
        if not os.path.exists(client):
            client = shutil.which("upnp-client") or "upnp-client"
        out = lab.run(rl.ns("a1"), client, "--timeout", "3", "search").stdout
    finally:
        dlna.stop()
        stats = relay.stop()
    responses = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    locations = sorted({r.get("location", "") for r in responses})
    print(f"\nssdp: upnp-client search on a1 found {locations}")
    print("  r1", stats)
    assert "http://10.19.2.3:8200/rootDesc.xml" in locations
    assert stats["segA->segB"]["answers"] >= 1


def test_wsdd_on_b_discovered_by_wsdd_on_a(rl: RelayLab) -> None:
    require(None if find_tool("wsdd") else "wsdd is not installed (scripts/test installs it)")
    lab = rl.lab
    (relay,) = start(rl, ["r1"], "wsd")
    host = lab.popen(
        rl.ns("b2"),
        "wsdd",
        "-4",
        "-i",
        "segB",
        "-n",
        "WSDHOSTB",
        "-s",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        lab.wait_for_membership(rl.ns("b2"), "segB", "239.255.255.250", host)
        found = lab.run(
            rl.ns("a1"),
            "timeout",
            "-s",
            "INT",
            "4",
            # By full path: timeout looks in PATH, which may lack sbin.
            tool("wsdd"),
            "-D",
            "-o",
            "-4",
            "-i",
            "segA",
            "-v",
            "-s",
            check=False,
        )
    finally:
        host.kill()
        host.wait()
        stats = relay.stop()
    lines = [ln for ln in (found.stdout + found.stderr).splitlines() if "discovered" in ln]
    print(f"\nwsd: wsdd -D on a1: {lines}")
    print("  r1", stats)
    assert any("WSDHOSTB" in ln and "10.19.2.3" in ln for ln in lines), found.stderr
    assert stats["segA->segB"]["answers"] >= 1


def test_relay_as_a_library_carries_answers_back_and_closes_cleanly(rl: RelayLab) -> None:
    # A responder on B answers each request by unicast to whoever sent it (the relay).
    responder = Counter4(rl, "b1", "B", GROUP, PORT)
    requester = sender(rl, "a1", "A", loop=False)
    requester.setblocking(False)
    answers: list[tuple[bytes, str]] = []

    def pump() -> bool:
        while True:
            try:
                data, source = responder.sock.recvfrom(65536)
            except BlockingIOError:
                break
            responder.sock.sendto(b"re " + data, source)
        with contextlib.suppress(BlockingIOError):
            while True:
                data, source = requester.recvfrom(65536)
                answers.append((data, source[0]))
        return len(answers) >= 3

    async def main() -> tuple[mcastio.RelayStats, ...]:
        relay = mcastio.Relay([(GROUP, PORT)], ["segA", "segB"])
        async with relay:
            for i in range(3):
                requester.sendto(b"ask %d" % i, (GROUP, PORT))
            await wait_for(pump, 5.0, "three answers carried back")
        await relay.aclose()
        assert "closed" in repr(relay)
        return relay.stats

    try:
        with rl.inside("r1"):
            stats = run(main())
    finally:
        responder.close()
        requester.close()
    print(f"\nlibrary: answers {answers}")
    print("  ", stats)
    assert sorted(answers) == [(b"re ask %d" % i, "10.19.1.11") for i in range(3)]
    a_to_b = next(s for s in stats if (s.source, s.destination) == ("segA", "segB"))
    assert (a_to_b.forwarded, a_to_b.answers, a_to_b.failed) == (3, 3, 0)


def _summary(got: Counter[bytes], sent: Sequence[bytes]) -> str:
    once = sum(1 for p in sent if got[p] == 1)
    more = sum(1 for p in sent if got[p] > 1)
    return f"{once} once, {more} more than once, {len(sent) - once - more} missing"
