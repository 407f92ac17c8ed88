"""Carrier return re-announces the memberships with a report, never a Leave.

Four hosts in one: eth0 speaks IGMPv2 and MLDv1 (``force_igmp_version=2``,
``force_mld_version=1``), eth1 IGMPv3 and MLDv2. Both links flap; tcpdump on the
host sees what left. A leave and re-join, what the endpoint used to do, sends an
IGMPv2 Leave, an MLDv1 Done or a v3 TO_IN {}: a fast-leave switch cuts the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator

import pytest

from mcastio import MulticastEndpoint, _hostreport
from mcastio._platform.linux.procfs import netns
from mcastio.testing import Lab, Link, lab_support
from tests.conftest import require, run
from tests.switchlab import start_tcpdump, stop_tcpdump

pytestmark = pytest.mark.lab

GROUP4, GROUP6 = "239.255.23.9", "ff15::23:9"
BPF = "igmp or (ip6 and ip6[6] == 0)"


@pytest.fixture(scope="module")
def versions_lab() -> Iterator[Lab]:
    require(lab_support())
    lab = Lab(
        links=2,
        sysctls={
            # Joins repeat their report 0.1 s later, not up to 1 s later.
            "net.ipv4.conf.default.igmpv3_unsolicited_report_interval": "100",
            "net.ipv4.conf.default.igmpv2_unsolicited_report_interval": "100",
            "net.ipv6.conf.default.mldv2_unsolicited_report_interval": "100",
            "net.ipv6.conf.default.mldv1_unsolicited_report_interval": "100",
        },
    )
    lab.build()
    try:
        old = lab.link[0].host_if
        lab.sh(lab.host, f"sysctl -qw net.ipv4.conf.{old}.force_igmp_version=2")
        lab.sh(lab.host, f"sysctl -qw net.ipv6.conf.{old}.force_mld_version=1")
        yield lab
    finally:
        lab.destroy()


def _leaves(lines: list[str]) -> list[str]:
    return [
        line
        for line in lines
        if ("leave" in line or "done" in line or "to_in { }" in line)
        and (GROUP4 in line or GROUP6 in line)
    ]


def test_carrier_return_reports_without_a_leave_on_v2_v3_mldv1_mldv2(
    versions_lab: Lab, need_tcpdump: None
) -> None:
    lab = versions_lab
    names = [link.host_if for link in lab.link]

    announced: list[str] = []
    all_announced = asyncio.Event()

    class Announced(logging.Handler):
        # Called on the loop's thread: the re-announcement runs in the watcher's round.
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("re-announced"):
                announced.append(record.getMessage())
                if len(announced) == 4:
                    all_announced.set()

    async def main() -> list[str]:
        async with (
            MulticastEndpoint(GROUP4, 42309, interfaces=names, keepalive=False) as ep4,
            MulticastEndpoint(GROUP6, 42309, interfaces=names, keepalive=False) as ep6,
        ):
            await asyncio.sleep(0.4)  # past the joins' own repeated reports
            # The keepers' shared version table as a just-destroyed namespace left it
            # (its inode number reused by this one): v3 everywhere. The re-announce
            # must read the version afresh, or eth0's IGMPv2 switch gets a v3 report.
            stale = _hostreport._sliced
            stale.table = dict.fromkeys(names, 3)
            stale.read_at, stale._netns = time.monotonic(), netns()
            dump = start_tcpdump(lab, lab.host, "any", BPF)
            try:
                for link in lab.link:
                    flap(link)
                    # One link at a time, each seen on its own by the watcher.
                    await asyncio.sleep(0.3)
                # Two groups on two links: four re-announcements. A busy machine
                # delays the watcher's round, so wait for them, not a fixed time.
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(all_announced.wait(), 10)
                await asyncio.sleep(0.5)  # the reports the re-announcements caused
            finally:
                lines = stop_tcpdump(dump)
            assert len(ep4.interfaces) == len(ep6.interfaces) == 2
            return lines

    def flap(link: Link) -> None:
        # A short flap: down and up in one go, the case that used to send a
        # Leave (a long one drops the interface, and its Leave cannot leave).
        command = f"ip link set {link.peer_if} down; ip link set {link.peer_if} up"
        lab.run(link.peer_ns, "sh", "-c", command)

    handler = Announced(logging.INFO)
    logger = logging.getLogger("mcastio")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with lab.inside():
            lines = run(main())
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    text = "\n".join(announced + lines)
    print(text)
    old, new = names
    expected = {
        "IGMPv2": (old, "igmp v2 report", GROUP4),
        "IGMPv3": (new, "igmp v3 report", GROUP4),
        "MLDv1": (old, "multicast listener report", GROUP6),
        "MLDv2": (new, "multicast listener report v2", GROUP6),
    }
    for name, (ifname, what, group) in expected.items():
        found = [ln for ln in lines if ifname in ln and what in ln and group in ln]
        assert found, f"no {name} report for {group} on {ifname} after the flap:\n{text}"
    assert _leaves(lines) == [], text
