"""Send-only endpoints on the wire: no IGMP/MLD report and no Leave, ever.

tcpdump in the peer (a packet socket where tcpdump cannot run: a plain user's
namespace) captures every IGMP packet and every IPv6 packet with a hop-by-hop
header (MLD always carries one, for its router alert) sent by the host's
interface, while a send-only endpoint starts, sends and closes; the peer must
still receive the datagrams. A joining endpoint afterwards is the control: its
reports show the capture does see them.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import struct
import subprocess
import time
from collections.abc import Iterator

import pytest

from mcastio import MulticastEndpoint
from mcastio.testing import Lab, tcpdump_support
from tests.conftest import require, run
from tests.test_cli_lab import mcastio_cmd

pytestmark = pytest.mark.lab

PORT = 43170


@pytest.fixture(scope="module")
def wire_lab() -> Iterator[Lab]:
    from mcastio.testing import lab_support

    require(lab_support())
    lab = Lab(links=1)
    lab.build()
    try:
        yield lab
    finally:
        lab.destroy()


def _host_mac(lab: Lab) -> str:
    out = lab.run(lab.host, "ip", "-o", "link", "show", "dev", lab.link[0].host_if).stdout
    return out.split("link/ether", 1)[1].split()[0]


#: One IGMP or MLD record or message the host sent: (group, "report" or "leave", family).
Record = tuple[str, str, str]


class Capture:
    """IGMP and MLD sent by the host, seen in the peer: tcpdump, or a packet socket.

    tcpdump cannot drop privileges in an unprivileged user namespace, so there a
    packet socket in the peer namespace captures the same frames.
    """

    def __init__(self, lab: Lab) -> None:
        link = lab.link[0]
        self._mac = _host_mac(lab)
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        if tcpdump_support() is None:
            # Only what the host sends: the peer's own reports (socat joins) are not counted.
            bpf = f"ether src {self._mac} and (igmp or ip6[6] == 0)"
            self._proc = lab.tcpdump(link.peer_ns, link.peer_if, bpf, verbose=True)
        else:
            with lab.inside(link.peer_ns):
                self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
                self._sock.bind((link.peer_if, 3))
                self._sock.setblocking(False)

    def stop(self) -> list[Record]:
        # Let the last packets through the capture before stopping it.
        time.sleep(0.3)
        if self._proc is not None:
            self._proc.terminate()
            out, _ = self._proc.communicate(timeout=5)
            return _tcpdump_records(out.decode(errors="replace"))
        assert self._sock is not None
        records: list[Record] = []
        mac = bytes.fromhex(self._mac.replace(":", ""))
        with self._sock:
            while True:
                try:
                    frame = self._sock.recv(65536)
                except BlockingIOError:
                    return records
                if frame[6:12] == mac:
                    records += _frame_records(frame)


_RECORD = re.compile(r"\[gaddr (\S+) (\w+) \{([^}]*)\}\]")


def _tcpdump_records(text: str) -> list[Record]:
    """Records in tcpdump -vv output (IPv4 packets continue on indented lines).

    An IGMPv3/MLDv2 record ``to_in { }`` (include nothing) is a Leave; every other
    record reports a membership. IGMPv2/MLDv1 print one message per packet.
    """
    packets: list[str] = []
    for line in text.splitlines():
        if line[:1].isspace() and packets:
            packets[-1] += " " + line.strip()
        elif line.strip():
            packets.append(line)
    records: list[Record] = []
    for packet in packets:
        family = "ipv6" if " IP6 " in packet else "ipv4"
        found = _RECORD.findall(packet)
        for gaddr, mode, sources in found:
            leave = mode == "to_in" and not sources.strip()
            records.append((gaddr, "leave" if leave else "report", family))
        if not found:
            words = packet.replace(",", " ").split()
            # The group comes last (IGMPv2 "report 239.1.2.3", MLDv1 "addr: ff05::1").
            named = [w for w in words if w.count(".") == 3 or w.startswith("ff0")]
            group = named[-1] if named else "?"
            leave = "leave" in packet or "done" in packet
            records.append((group, "leave" if leave else "report", family))
    return records


def _frame_records(frame: bytes) -> list[Record]:
    """IGMP or MLD records in one Ethernet frame, classified as tcpdump's are."""
    kind = frame[12:14]
    if kind == b"\x08\x00" and frame[23] == 2:  # IPv4, protocol IGMP
        igmp = frame[14 + (frame[14] & 0x0F) * 4 :]
        if igmp[0] == 0x22:  # IGMPv3 report
            return _v3_records(igmp[8:], struct.unpack_from("!H", igmp, 6)[0], 4, "ipv4")
        group = str(ipaddress.IPv4Address(igmp[4:8]))
        return [(group, "leave" if igmp[0] == 0x17 else "report", "ipv4")]
    if kind == b"\x86\xdd" and frame[20] == 0:  # IPv6 with a hop-by-hop header (MLD)
        icmp = frame[54 + (frame[55] + 1) * 8 :]
        if icmp[0] == 143:  # MLDv2 report
            return _v3_records(icmp[8:], struct.unpack_from("!H", icmp, 6)[0], 16, "ipv6")
        if icmp[0] in (131, 132):
            group = str(ipaddress.IPv6Address(icmp[8:24]))
            return [(group, "leave" if icmp[0] == 132 else "report", "ipv6")]
    return []


def _v3_records(data: bytes, count: int, size: int, family: str) -> list[Record]:
    records: list[Record] = []
    at = 0
    for _ in range(count):
        mode, aux, nsrc = struct.unpack_from("!BBH", data, at)
        group = str(ipaddress.ip_address(data[at + 4 : at + 4 + size]))
        # CHANGE_TO_INCLUDE_MODE (3) with no source is a Leave.
        records.append((group, "leave" if mode == 3 and nsrc == 0 else "report", family))
        at += 4 + size + nsrc * size + aux * 4
    return records


def _reports_and_leaves(records: list[Record], group: str) -> tuple[int, int]:
    """(records reporting ``group``, records leaving it)."""
    mine = [kind for g, kind, _family in records if g == group]
    return mine.count("report"), mine.count("leave")


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
    capture = Capture(lab)

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
    text = capture.stop()
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
    capture = Capture(lab)
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
    text = capture.stop()
    seen = _reports_and_leaves(text, group)
    # The Leaves of the control endpoint above may still be repeated (robustness
    # retransmissions); no other IGMP may come from this host. (MLD of the lab's own
    # link setup may still be retransmitted: it is not IGMP.)
    other = [r for r in text if r[2] == "ipv4" and r[0] != "239.255.17.202"]
    print(f"\nmcastio send: reports/leaves for {group} {seen}, other IGMP {len(other)}; "
          f"peer got {got}/3")  # fmt: skip
    assert got == 3
    assert seen == (0, 0), text
    assert other == [], text
