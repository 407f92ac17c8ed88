"""Send-only endpoints on the wire: no IGMP/MLD report and no Leave, ever.

tcpdump in the peer captures every IGMP packet and every IPv6 packet with a
hop-by-hop header (MLD always carries one, for its router alert) sent by the
host's interface, while a send-only endpoint starts, sends and closes; the peer
must still receive the datagrams. A joining endpoint afterwards is the control:
its reports show the capture does see them.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
from collections.abc import Iterator

import pytest

from mcastio import MulticastEndpoint
from mcastio.testing import Lab
from tests.conftest import require, run
from tests.test_cli_lab import mcastio_cmd

pytestmark = pytest.mark.lab

PORT = 43170


@pytest.fixture(scope="module")
def wire_lab() -> Iterator[Lab]:
    from mcastio.testing import lab_support, tcpdump_support

    require(lab_support())
    require(tcpdump_support())
    lab = Lab(links=1)
    lab.build()
    try:
        yield lab
    finally:
        lab.destroy()


def _host_mac(lab: Lab) -> str:
    out = lab.run(lab.host, "ip", "-o", "link", "show", "dev", lab.link[0].host_if).stdout
    return out.split("link/ether", 1)[1].split()[0]


def _capture(lab: Lab) -> subprocess.Popen[bytes]:
    # Only what the host sends: the peer's own reports (socat joins) are not counted.
    bpf = f"ether src {_host_mac(lab)} and (igmp or ip6[6] == 0)"
    return lab.tcpdump(lab.link[0].peer_ns, lab.link[0].peer_if, bpf, verbose=True)


def _packets(text: str) -> list[str]:
    """tcpdump -vv output, one string per packet (IPv4 continues on indented lines)."""
    packets: list[str] = []
    for line in text.splitlines():
        if line[:1].isspace() and packets:
            packets[-1] += " " + line.strip()
        elif line.strip():
            packets.append(line)
    return packets


def _stop(proc: subprocess.Popen[bytes]) -> str:
    # Let the last packets through the capture before stopping it.
    time.sleep(0.3)
    proc.terminate()
    out, _ = proc.communicate(timeout=5)
    return out.decode(errors="replace")


_RECORD = re.compile(r"\[gaddr (\S+) (\w+) \{([^}]*)\}\]")


def _reports_and_leaves(text: str, group: str) -> tuple[int, int]:
    """(records joining ``group``, records leaving it) in tcpdump -vv output.

    An IGMPv3/MLDv2 record ``to_in { }`` (include nothing) is a Leave; every other
    record for the group reports a membership. IGMPv2/MLDv1 print one message per
    packet: ``leave``/``done``, or a report.
    """
    reports = leaves = 0
    for line in _packets(text):
        records = _RECORD.findall(line)
        for gaddr, mode, sources in records:
            if gaddr == group:
                if mode == "to_in" and not sources.strip():
                    leaves += 1
                else:
                    reports += 1
        if not records and group in line:
            if "leave" in line or "done" in line:
                leaves += 1
            else:
                reports += 1
    return reports, leaves


@pytest.mark.parametrize(
    ("family", "group", "control"),
    [("ipv4", "239.255.17.201", "239.255.17.202"), ("ipv6", "ff05::17:201", "ff05::17:202")],
)
def test_send_only_endpoint_sends_no_report_and_no_leave(
    wire_lab: Lab, family: str, group: str, control: str
) -> None:
    lab = wire_lab
    link = lab.link[0]
    listener = lab.peer_listen(link, group, PORT)
    capture = _capture(lab)

    async def send_only() -> tuple[int, tuple[str, ...], bool]:
        async with MulticastEndpoint(group, PORT, join=False, keepalive=1.0) as ep:
            sent = 0
            for n in range(3):
                results = await ep.send_all(f"send-only {n}\n".encode())
                sent += sum(r.ok for r in results)
            # No receive socket exists to hold a membership, and no keeper runs.
            assert ep._engine.memberships.sockets == ()
            keeper = bool(ep._engine.keepalives) or bool(ep.keepalive_state)
            return sent, ep.groups, keeper

    with lab.inside():
        sent, groups, keeper = run(send_only())
    listener.wait_for(b"send-only 2")
    received = [line for line in listener.lines() if line.startswith(b"send-only")]

    async def joining() -> None:
        async with MulticastEndpoint(control, PORT, keepalive=False):
            await asyncio.sleep(0.05)

    with lab.inside():
        run(joining())
    text = _stop(capture)
    seen = _reports_and_leaves(text, group)
    control_seen = _reports_and_leaves(text, control)
    print(f"\n{family}: send-only {group}: reports/leaves {seen}; peer got {len(received)}/3; "
          f"control {control}: reports/leaves {control_seen}")  # fmt: skip
    assert (sent, groups, keeper) == (3, (group,), False)
    assert received == [b"send-only 0", b"send-only 1", b"send-only 2"]
    assert seen == (0, 0), text
    # The control proves the capture sees this host's reports and Leaves.
    assert control_seen[0] >= 1, text
    assert control_seen[1] >= 1, text


def test_mcastio_send_causes_no_igmp(wire_lab: Lab) -> None:
    lab = wire_lab
    link = lab.link[0]
    group = "239.255.17.203"
    listener = lab.peer_listen(link, group, PORT)
    capture = _capture(lab)
    lab.run(
        lab.host, *mcastio_cmd("send", f"{group}:{PORT}", "cli\n", "-c", "3", "--interval", "0.01")
    )

    async def marker() -> None:
        # The link delivers in order: once the marker is in, so are the three copies.
        async with MulticastEndpoint(group, PORT, join=False, keepalive=False) as ep:
            await ep.send_all(b"end\n")

    with lab.inside():
        run(marker())
    listener.wait_for(b"end")
    got = listener.lines().count(b"cli")
    text = _stop(capture)
    seen = _reports_and_leaves(text, group)
    # The Leaves of the control endpoint above may still be repeated (robustness
    # retransmissions); no other IGMP may come from this host. (MLD of the lab's own
    # link setup may still be retransmitted: it is not IGMP.)
    other = [p for p in _packets(text) if "igmp" in p and "239.255.17.202" not in p]
    print(f"\nmcastio send: reports/leaves for {group} {seen}, other IGMP {len(other)}; "
          f"peer got {got}/3")  # fmt: skip
    assert got == 3
    assert seen == (0, 0), text
    assert other == [], text
