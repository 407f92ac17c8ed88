"""The shared keeper on a real kernel: one report per refresh for every group on a link.

Two endpoints hold three groups on one veth (one group held by both). Before,
each endpoint's keeper of each group sent its own report on its own timer: four
reports and four timers per interval. Now the loop's reporter for the link sends
one IGMPv3 report of three records per refresh, which tcpdump in the peer
namespace decodes (and would flag with a bad checksum); with IGMPv2 forced, one
report per group. After one endpoint closes, the records are those the other
holds; after the last, no timer and no raw socket is left.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator

import pytest

from mcastio import MulticastEndpoint, _hostreport, _linkreports
from mcastio._keepalive import Keepalive
from mcastio.testing import Lab
from tests.conftest import module_lab, run
from tests.switchlab import start_tcpdump, stop_tcpdump
from tests.test_keeper_cost_lab import raw_sockets

pytestmark = [pytest.mark.lab, pytest.mark.one_path]

G1, G2, G3 = "239.255.18.1", "239.255.18.2", "239.255.18.3"
PORT = 41818
KEEPALIVE = 0.4


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    yield from module_lab(
        links=1,
        ipv6=True,
        sysctls={
            # The join's repeated reports are over within 0.1 s, before the counting.
            "net.ipv4.conf.default.igmpv3_unsolicited_report_interval": "100",
            "net.ipv4.conf.default.igmpv2_unsolicited_report_interval": "100",
            "net.ipv6.conf.default.mldv2_unsolicited_report_interval": "100",
        },
    )


def keeper_timers(loop: asyncio.AbstractEventLoop) -> int:
    """Armed timers of keepers and reporters (asyncio's own list of timer handles)."""
    handles = getattr(loop, "_scheduled", [])
    return sum(
        isinstance(getattr(h._callback, "__self__", None), Keepalive | _linkreports.LinkReporter)
        for h in handles
        if not h.cancelled()
    )


def current_state(packets: list[str], kind: str = "igmp v3 report") -> list[list[str]]:
    """The groups of each IGMPv3 (or MLDv2) current-state report (the kernel's joins
    and leaves are state-change records, to_ex and to_in), in order."""
    found = []
    for p in packets:
        if kind in p and "is_ex" in p:
            found.append(re.findall(r"gaddr (\S+) is_ex", p))
    return found


def v2_reports(packets: list[str]) -> list[str]:
    return [m.group(1) for p in packets if (m := re.search(r"igmp v2 report (\S+)", p))]


async def capture(lab: Lab, seconds: float, bpf: str = "igmp") -> list[str]:
    link = lab.link[0]
    dump = start_tcpdump(lab, link.peer_ns, link.peer_if, bpf)
    await asyncio.sleep(seconds)
    return stop_tcpdump(dump)


def endpoint(lab: Lab, groups: list[str]) -> MulticastEndpoint:
    return MulticastEndpoint(
        groups, PORT, interfaces=[lab.link[0].host_if], keepalive=KEEPALIVE, loopback=False
    )


def test_one_report_per_refresh_carries_every_group_on_the_link(lab: Lab) -> None:
    async def main() -> dict[str, object]:
        loop = asyncio.get_running_loop()
        a, b = endpoint(lab, [G1, G2]), endpoint(lab, [G2, G3])
        await a.start()
        await b.start()
        try:
            # Two intervals: the keepers' phases fall in step (see Keepalive.window).
            await asyncio.sleep(2 * KEEPALIVE)
            both = await capture(lab, 4 * KEEPALIVE)
            timers, raw = keeper_timers(loop), raw_sockets()
            [reporter] = _linkreports.reporters(loop).values()
            await a.aclose()
            await asyncio.sleep(KEEPALIVE)
            one = await capture(lab, 3 * KEEPALIVE)
            states = b.keepalive_state
        finally:
            await a.aclose()
            await b.aclose()
        return {
            "both": both,
            "one": one,
            "timers": timers,
            "raw": raw,
            "states": states,
            "after": (keeper_timers(loop), raw_sockets(), dict(_linkreports.reporters(loop))),
            "reporter_timer": reporter.timer,
        }

    with lab.inside():
        got = run(main())
    both, one = got["both"], got["one"]
    assert isinstance(both, list)
    assert isinstance(one, list)
    print(f"2 endpoints, 3 groups: {current_state(both)} in {4 * KEEPALIVE:g} s")
    print(f"after one closed: {current_state(one)} in {3 * KEEPALIVE:g} s")
    print(f"while open: {got['timers']} keeper timer(s), {got['raw']} raw IGMP socket(s)")
    assert not [p for p in both + one if "bad" in p], "tcpdump found a bad checksum"
    reports = current_state(both)
    # About one per interval (4 keepers used to make 4), each with all three groups.
    assert 2 <= len(reports) <= 5, both
    assert all(sorted(r) == [G1, G2, G3] for r in reports), both
    assert got["timers"] == 1
    assert got["raw"] == 1
    after = current_state(one)
    assert 1 <= len(after) <= 4, one
    assert all(sorted(r) == [G2, G3] for r in after), one
    assert all(s.mechanism == "report" and s.refreshes >= 2 for s in got["states"])  # type: ignore[attr-defined]
    # The last close left nothing armed and nothing open.
    assert got["after"] == (0, 0, {})
    assert got["reporter_timer"] is None


def test_igmpv2_gets_one_report_per_group(lab: Lab) -> None:
    host_if = lab.link[0].host_if
    lab.sh(lab.host, f"sysctl -qw net.ipv4.conf.{host_if}.force_igmp_version=2")

    async def main() -> list[str]:
        # The keepers share a table of versions up to 2 s old: read it again now.
        _hostreport._sliced.table = None
        a, b = endpoint(lab, [G1, G2]), endpoint(lab, [G2, G3])
        await a.start()
        await b.start()
        try:
            await asyncio.sleep(2 * KEEPALIVE)
            return await capture(lab, 3 * KEEPALIVE)
        finally:
            await a.aclose()
            await b.aclose()

    try:
        with lab.inside():
            packets = run(main())
    finally:
        lab.sh(lab.host, f"sysctl -qw net.ipv4.conf.{host_if}.force_igmp_version=0")
    reports = v2_reports(packets)
    print(f"IGMPv2 forced: {reports} in {3 * KEEPALIVE:g} s")
    assert not [p for p in packets if "v3 report" in p or "bad" in p], packets
    # One report per group and refresh: each group as often as the others.
    counts = {g: reports.count(g) for g in (G1, G2, G3)}
    assert min(counts.values()) >= 2, packets
    assert max(counts.values()) <= 4, packets
    assert len(reports) == sum(counts.values()), packets


def test_mldv2_one_report_per_refresh(lab: Lab) -> None:
    groups = ["ff15::18:1", "ff15::18:2", "ff15::18:3"]

    async def main() -> list[str]:
        a, b = endpoint(lab, groups[:2]), endpoint(lab, groups[1:])
        await a.start()
        await b.start()
        try:
            await asyncio.sleep(2 * KEEPALIVE)
            # MLD rides behind a hop-by-hop header (next header 0).
            return await capture(lab, 3 * KEEPALIVE, "ip6 and ip6[6] == 0")
        finally:
            await a.aclose()
            await b.aclose()

    with lab.inside():
        packets = run(main())
    reports = current_state(packets, "listener report v2")
    print(f"MLDv2: {reports} in {3 * KEEPALIVE:g} s")
    assert not [p for p in packets if "bad" in p], packets
    assert 2 <= len(reports) <= 4, packets
    assert all(sorted(r) == groups for r in reports), packets
