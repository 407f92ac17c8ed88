"""mcastio with linuxptp's ptp4l, a PTP daemon nobody here wrote (Debian ``linuxptp``).

PTP over UDPv4 (IEEE 1588 annex D) multicasts every general message, Announce
among them, to 224.0.1.129 port 320. ptp4l opens one socket per port and
interface (``SO_BINDTODEVICE``), so it is a strict peer: an Announce it hears
came out of exactly its link, and the clockIdentity in the header says which
ptp4l sent one. The tests:

- ptp4l masters behind every link: one endpoint hears each one's Announce on that
  link's interface, carrying that master's own clockIdentity;
- one ``send_all`` of an Announce built here: ptp4l slaves on every link take it as
  their foreign master and select it;
- a ptp4l slave on the host's eth0 and an endpoint on port 320 in the same
  namespace, each started before the other once: both go on receiving.

ptp4l runs with software time stamps (``-S``) on the veths and its control socket
in the test's directory. Its clock is CLOCK_REALTIME, which in a lab run as root is
the machine's: ``free_running`` keeps it from steering that clock, and it runs
without CAP_SYS_TIME as well, so a ptp4l that touches the clock anyway (some
releases set its frequency and leap bits when they start, free_running or not)
only fails to. Readiness is read from its log (``-m``), never a sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import select
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

import mcastio
from mcastio.testing import Lab, LabError, Link, find_tool
from mcastio.testing.responders import _Daemon, start_all
from tests.conftest import module_lab, require, run

pytestmark = pytest.mark.lab

PTP_GROUP, GENERAL_PORT = "224.0.1.129", 320
ANNOUNCE = 0x0B
#: Announce eight times a second (2**-3 s): the masters win and are heard within a second.
LOG_ANNOUNCE_INTERVAL = -3
#: The clockIdentity of the Announce mcastio sends: "MCI", the EUI-64 filler, "O", 1.
OURS = bytes.fromhex("4d4349fffe4f0001")

_CONF = """[global]
logAnnounceInterval {log_announce}
logSyncInterval 0
announceReceiptTimeout {receipt}
slaveOnly {slave_only}
# Never steer a clock: CLOCK_REALTIME is the machine's (CAP_SYS_TIME is dropped too).
free_running 1
# Software time stamps of a busy machine's veths can be late; the default is 1 ms.
tx_timestamp_timeout 200
uds_address {uds}
"""


def _need_ptp4l() -> None:
    for name in ("ptp4l", "setpriv"):
        package = "linuxptp" if name == "ptp4l" else "util-linux"
        require(None if find_tool(name) else f"{name} is not installed (Debian {package})")


class Ptp4l(_Daemon):
    """ptp4l on ``ifname`` of ``ns``, UDPv4 and software time stamps, its files in ``workdir``."""

    def __init__(
        self,
        lab: Lab,
        ns: str,
        ifname: str,
        workdir: Path,
        *,
        slave_only: bool = False,
        receipt: int = 2,
    ) -> None:
        super().__init__(lab, ns)
        self.ifname = ifname
        self.workdir = workdir
        self.slave_only = slave_only
        self.receipt = receipt

    def _launch(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        uds = self.workdir / "uds"
        # A Unix socket path must fit sockaddr_un (108 bytes): a short tmp dir does.
        if len(str(uds)) >= 100:
            raise LabError(f"ptp4l's socket path is too long: {uds}")
        conf = self.workdir / "ptp4l.conf"
        conf.write_text(
            _CONF.format(
                log_announce=LOG_ANNOUNCE_INTERVAL,
                receipt=self.receipt,
                slave_only=int(self.slave_only),
                uds=uds,
            ),
            encoding="ascii",
        )
        # ptp4l by full path: setpriv looks it up on a PATH that may lack sbin.
        drop = ["setpriv", "--inh-caps=-sys_time", "--bounding-set=-sys_time"]
        ptp4l = [find_tool("ptp4l") or "ptp4l", "-f", str(conf), "-i", self.ifname]
        self._spawn(*drop, *ptp4l, "-S", "-4", "-m", "-q")

    def _ready(self) -> None:
        # Its port's sockets are open and joined once it listens.
        self.wait_for(rb"port 1: INITIALIZING to LISTENING on INIT_COMPLETE", 10.0)

    def wait_for(self, pattern: bytes, timeout: float = 5.0) -> re.Match[bytes]:
        """Block until the log has a line matching ``pattern``; its first match."""
        deadline = time.monotonic() + timeout
        while (found := re.search(pattern, self.log)) is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._read(remaining):
                raise LabError(f"ptp4l on {self.ifname}: no {pattern!r} in {self.log.decode()}")
        return found

    def poll(self) -> bytes:
        """Take in what ptp4l has printed so far, without waiting; the whole log."""
        while self._read(0):
            pass
        return self.log

    def _read(self, timeout: float) -> bool:
        """Read one chunk within ``timeout``; False when none came or ptp4l exited."""
        proc = self._proc
        assert proc is not None
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        if not select.select([fd], [], [], timeout)[0]:
            return False
        chunk = os.read(fd, 65536)
        self.log += chunk
        return bool(chunk)

    def grandmaster(self) -> str:
        """Wait until this ptp4l takes the grandmaster role; its clock identity."""
        found = self.wait_for(rb"selected local clock (\S+) as best master\n")
        self.wait_for(rb"port 1: assuming the grand master role")
        return found.group(1).decode()


def clock_id(raw: bytes) -> str:
    """A clockIdentity the way ptp4l prints one: ``001122.fffe.334455``."""
    h = raw.hex()
    return f"{h[:6]}.{h[6:10]}.{h[10:]}"


def mac_clock_id(lab: Lab, link: Link) -> str:
    """The identity ptp4l gives itself on ``link``'s peer: its MAC with ff:fe inside (EUI-64)."""
    out = lab.run(link.peer_ns, "ip", "-o", "link", "show", "dev", link.peer_if).stdout
    mac = bytes.fromhex(out.split("link/ether ")[1].split()[0].replace(":", ""))
    return clock_id(mac[:3] + b"\xff\xfe" + mac[3:])


def announce(identity: bytes, sequence: int) -> bytes:
    """A PTPv2 Announce (64 bytes) from port 1 of ``identity``, its own grandmaster."""
    header = struct.pack(
        "!BBHBxHq4x8sHHBb",
        ANNOUNCE,  # transportSpecific 0, messageType Announce
        2,  # versionPTP
        64,  # messageLength
        0,  # domainNumber
        0x0008,  # flagField: PTP_TIMESCALE
        0,  # correctionField
        identity,  # sourcePortIdentity.clockIdentity
        1,  # sourcePortIdentity.portNumber
        sequence & 0xFFFF,
        5,  # controlField: "other", as for every message but the first four types
        LOG_ANNOUNCE_INTERVAL,
    )
    body = struct.pack(
        "!6sIhxBBBHB8sHB",
        b"\0" * 6,  # originTimestamp: seconds (48 bits)
        0,  # and nanoseconds
        37,  # currentUtcOffset
        1,  # grandmasterPriority1: better than ptp4l's 128
        248,  # grandmasterClockQuality: clockClass "default"
        0xFE,  # clockAccuracy "unknown"
        0xFFFF,  # offsetScaledLogVariance
        128,  # grandmasterPriority2
        identity,  # grandmasterIdentity
        0,  # stepsRemoved
        0xA0,  # timeSource: internal oscillator
    )
    assert len(header) == 34
    assert len(body) == 30
    return header + body


def announce_identity(data: bytes) -> str | None:
    """The sender's clockIdentity (header bytes 20..27) of a PTPv2 Announce, else None."""
    if len(data) < 64 or data[0] & 0x0F != ANNOUNCE or data[1] & 0x0F != 2:
        return None
    return clock_id(data[20:28])


Heard = list[tuple[str, str, int, str | None, str]]  # interface, source, port, group, identity


async def hear_announces(
    ep: mcastio.MulticastEndpoint, interfaces: set[str], per_interface: int, timeout: float
) -> Heard:
    """Announce messages ``ep`` receives until each of ``interfaces`` gave ``per_interface``,
    or ``timeout`` passed (the caller's assertions then say what was missing)."""
    heard: Heard = []
    counts: Counter[str] = Counter()

    async def collect() -> None:
        async for dgram in ep:
            identity = announce_identity(dgram.data)
            if identity is None:
                continue  # Sync, Follow_Up, Delay_Resp: the masters send them too
            heard.append((dgram.interface, *dgram.source[:2], dgram.group, identity))
            counts[dgram.interface] += 1
            if all(counts[i] >= per_interface for i in interfaces):
                return

    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(collect(), timeout)
    return heard


def _endpoint() -> mcastio.MulticastEndpoint:
    return mcastio.MulticastEndpoint(PTP_GROUP, GENERAL_PORT, watch=False, keepalive=False)


def check_attribution(lab: Lab, heard: Heard, masters: dict[str, str]) -> None:
    """Each Announce came in on the interface of the link whose master sent it."""
    by_if = {link.host_if: link for link in lab.link}
    for interface, source, port, group, identity in heard:
        assert identity == masters[interface], (interface, identity, masters)
        link = by_if[interface]
        assert (source, port, group) == (link.peer_addr, GENERAL_PORT, PTP_GROUP), heard


@pytest.fixture(scope="module")
def ptp_lab() -> Iterator[Lab]:
    _need_ptp4l()
    yield from module_lab(links=3, ipv6=False)


@pytest.fixture
def start_ptp4l(ptp_lab: Lab, tmp_path: Path) -> Iterator[Callable[..., list[Ptp4l]]]:
    """Start ptp4l on each ``(ns, ifname)``, all alike; every one is stopped when the test ends."""
    started: list[Ptp4l] = []

    def starter(places: Sequence[tuple[str, str]], **options: Any) -> list[Ptp4l]:
        daemons = [
            Ptp4l(ptp_lab, ns, ifname, tmp_path / f"ptp{len(started) + n}", **options)
            for n, (ns, ifname) in enumerate(places)
        ]
        started.extend(daemons)
        start_all(daemons)
        return daemons

    yield starter
    for daemon in started:
        daemon.stop()


def start_masters(lab: Lab, start: Callable[..., list[Ptp4l]]) -> dict[str, str]:
    """A ptp4l master behind every link; each host interface's master clock identity,
    checked against the peer's MAC."""
    masters = start([(link.peer_ns, link.peer_if) for link in lab.link])
    ids = {link.host_if: m.grandmaster() for link, m in zip(lab.link, masters, strict=True)}
    for link in lab.link:
        assert ids[link.host_if] == mac_clock_id(lab, link)
    # Each master is its own: a wrong attribution cannot pass for a right one.
    assert len(set(ids.values())) == len(lab.link), ids
    return ids


def test_ptp4l_masters_are_heard_on_their_own_links(
    ptp_lab: Lab, start_ptp4l: Callable[..., list[Ptp4l]]
) -> None:
    lab = ptp_lab
    ids = start_masters(lab, start_ptp4l)
    every = {link.host_if for link in lab.link}

    async def main() -> Heard:
        async with _endpoint() as ep:
            return await hear_announces(ep, every, per_interface=3, timeout=5.0)

    with lab.inside():
        heard = run(main())
    print(f"\nptp4l Announce per interface: {sorted(Counter(h[0] for h in heard).items())}")
    assert {h[0] for h in heard} == every, heard
    check_attribution(lab, heard, ids)


def test_send_all_announce_is_selected_by_ptp4l_on_every_link(
    ptp_lab: Lab, start_ptp4l: Callable[..., list[Ptp4l]]
) -> None:
    lab = ptp_lab
    slaves = start_ptp4l([(lk.peer_ns, lk.peer_if) for lk in lab.link], slave_only=True)
    ours = clock_id(OURS)
    chosen = f"selected best master clock {ours}\n".encode()

    async def main() -> tuple[int, set[str]]:
        sent, interfaces = 0, set()
        async with _endpoint() as ep:
            deadline = asyncio.get_running_loop().time() + 5.0
            # At the interval the Announce itself names, as a master sends them, until
            # every slave has selected it (ptp4l wants two within four intervals).
            while not all(chosen in s.poll() for s in slaves):
                if asyncio.get_running_loop().time() > deadline:
                    break
                results = await ep.send_all(announce(OURS, sent))
                assert all(r.ok for r in results), results
                interfaces |= {r.interface for r in results}
                sent += 1
                await asyncio.sleep(2.0**LOG_ANNOUNCE_INTERVAL)
        return sent, interfaces

    with lab.inside():
        sent, interfaces = run(main())
    print(f"\nAnnounce sent {sent} times before every ptp4l selected it")
    # ptp4l's word first: a copy missing on a link shows there whatever send_all reported.
    for link, slave in zip(lab.link, slaves, strict=True):
        log = slave.poll().decode()
        assert f"new foreign master {ours}-1" in log, (link.peer_if, log)
        assert chosen.decode() in log, (link.peer_if, log)
        assert "LISTENING to UNCALIBRATED on RS_SLAVE" in log, (link.peer_if, log)
    assert interfaces == {link.host_if for link in lab.link}


def test_ptp4l_and_an_endpoint_share_port_320_on_the_host(
    ptp_lab: Lab, start_ptp4l: Callable[..., list[Ptp4l]]
) -> None:
    """ptp4l binds 0.0.0.0:319 and :320 with SO_REUSEADDR and SO_BINDTODEVICE; the
    endpoint's receive socket is bound to the group: neither takes the other's."""
    lab = ptp_lab
    ids = start_masters(lab, start_ptp4l)
    every = {link.host_if for link in lab.link}
    eth0 = lab.link[0]
    # Eight Announce intervals (1 s) without one and it would fall back to listening:
    # each window below is longer, so a ptp4l that stopped hearing would show it.
    window = 1.5
    host: list[Ptp4l] = []
    marks: list[int] = []

    async def share(first: str) -> Heard:
        async with _endpoint() as ep:
            if first == "endpoint":
                # ptp4l binds its ports while the endpoint holds port 320.
                place = [(lab.host, eth0.host_if)]
                host.extend(await asyncio.to_thread(start_ptp4l, place, slave_only=True, receipt=8))
                selected = f"selected best master clock {ids[eth0.host_if]}\n".encode()
                await asyncio.to_thread(host[0].wait_for, re.escape(selected))
                await asyncio.to_thread(host[0].wait_for, rb"to UNCALIBRATED on RS_SLAVE")
            marks.append(len(host[0].poll()))
            loop = asyncio.get_running_loop()
            started = loop.time()
            heard = await hear_announces(ep, every, per_interface=10**6, timeout=window)
            assert loop.time() - started >= window * 0.9
            return heard

    with lab.inside():
        heard_first = run(share("endpoint"))
        # The endpoint binds port 320 while ptp4l holds it.
        heard_second = run(share("ptp4l"))
    log = host[0].poll().decode()
    counts = [Counter(h[0] for h in heard) for heard in (heard_first, heard_second)]
    print(f"\nendpoint beside ptp4l, Announce per interface: {counts}")
    for heard, count in zip((heard_first, heard_second), counts, strict=True):
        check_attribution(lab, heard, ids)
        # About twelve per link in each window; a link that fell silent has none.
        assert set(count) == every, count
        assert min(count.values()) >= 4, count
    after = log[marks[0] :]
    # ptp4l kept hearing its master's Announce the whole time, and only its own link's.
    assert "ANNOUNCE_RECEIPT_TIMEOUT_EXPIRES" not in after, log
    assert "FAULTY" not in log, log
    masters_heard = set(re.findall(r"new foreign master (\S+)-1", log))
    assert masters_heard == {ids[eth0.host_if]}, log
