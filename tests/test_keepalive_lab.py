"""The membership keeper in the article's network: a snooping bridge that stops forwarding.

Two ways a host stops answering queries, each with IPv4 (and IPv6 where it exists):

- unreached: the querier sits on another port and ``mcast_flood off`` on the host's
  port keeps its queries from the host, as a switch that does not flood queries does;
- rp_filter: the querier's implausible source makes the host's strict rp_filter drop
  every query (IPv4 only: IPv6 has no rp_filter, and a Linux bridge ignores MLD
  queries from a non-link-local source itself).

A plain endpoint loses the stream one membership interval after joining; with the
keeper it flows for 4 intervals and more, and the host sends no Leave.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

import mcastio
from mcastio import KeepaliveState, MulticastEndpoint, Querier, create_multicast_endpoint
from mcastio._cli import main as cli_main
from mcastio.testing import Lab
from tests.conftest import require, run
from tests.switchlab import (
    SnoopingSwitch,
    add_snooping_switch,
    mdb,
    start_querier,
    start_tcpdump,
    stop_tcpdump,
)

# Reports and queries on the wire, a bridge's forwarding: one drain path is enough.
pytestmark = [pytest.mark.lab, pytest.mark.one_path]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(mcastio.__file__)))

MEMBERSHIP = 0.8  # the bridge's membership interval, seconds
KEEPALIVE = 0.25
IMPLAUSIBLE = "192.168.77.1"
GROUPS = {4: "239.255.12.1", 6: "ff15::12:1"}
SSM_GROUPS = {4: "232.1.12.1", 6: "ff35::12:1"}
PERIOD = 0.04

# Numbered datagrams from the sender, so a test can tell which ones got through. It
# starts before the join and sends on a line on stdin: a Python start on a busy
# machine can take most of a membership interval.
_SENDER = r"""
import socket, sys, time
group, port, dev = sys.argv[1], int(sys.argv[2]), sys.argv[3]
count, interval = int(sys.argv[4]), float(sys.argv[5])
if ":" in group:
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, socket.if_nametoindex(dev))
    target = (group, port, 0, socket.if_nametoindex(dev))
else:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, dev.encode())
    target = (group, port)
print("ready", flush=True)
sys.stdin.readline()
for i in range(count):
    s.sendto(b"n%d" % i, target)
    time.sleep(interval)
"""


def start_sender(
    lab: Lab, ns: str, dev: str, group: str, port: int, count: int
) -> subprocess.Popen[bytes]:
    """A numbered sender, started and waiting: :func:`release` sets it going."""
    proc = lab.popen(
        ns, sys.executable, "-c", _SENDER, group, str(port), dev, str(count), str(PERIOD),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ready\n", proc.stderr.read() if proc.stderr else b""
    return proc


def release(sender: subprocess.Popen[bytes]) -> None:
    assert sender.stdin is not None
    sender.stdin.write(b"go\n")
    sender.stdin.close()


def article_switch(
    make_lab: Callable[..., Lab], family: int, case: str
) -> tuple[Lab, SnoopingSwitch]:
    lab = make_lab(
        links=1,
        ipv6=False,
        sysctls={
            "net.ipv4.conf.all.rp_filter": "1",
            # The join's repeated report follows within 0.1 s instead of up to 1 s.
            "net.ipv4.conf.default.igmpv3_unsolicited_report_interval": "100",
            "net.ipv6.conf.default.mldv2_unsolicited_report_interval": "100",
        },
    )
    switch = add_snooping_switch(
        lab,
        membership_interval=MEMBERSHIP,
        query_interval=0.5,
        host_flood=case == "rp_filter",
        ipv6=family == 6,
    )
    if case == "rp_filter":
        start_querier(lab, switch.link, IMPLAUSIBLE)
    else:
        # The bridge hears this querier, so it forwards by membership; the host never does.
        start_querier(lab, switch.link, "mld" if family == 6 else switch.link.peer_addr)
    # The bridge forwards by membership only once it has heard a query and waited
    # its max response time; until then it floods (and the host's port takes none).
    time.sleep(0.6)
    return lab, switch


async def receive_stream(
    lab: Lab,
    switch: SnoopingSwitch,
    group: str,
    port: int,
    count: int,
    dump: subprocess.Popen[bytes] | None = None,
    **options: object,
) -> tuple[list[int], MulticastEndpoint, list[str]]:
    """Join on the switch link, stream ``count`` datagrams, return the numbers received.

    ``dump`` (a tcpdump) is stopped before the endpoint closes: closing leaves the
    group, and that Leave is the endpoint's, not the keeper's.
    """
    link = switch.link
    got: list[int] = []
    sender = start_sender(lab, link.peer_ns, link.peer_if, group, port, count)
    async with MulticastEndpoint(group, port, interfaces=[link.host_if], **options) as ep:  # type: ignore[arg-type]
        sub = ep.subscribe()
        await wait_for_mdb(lab, switch, group)
        release(sender)
        quiet = 0.0
        while sender.poll() is None or quiet < 0.3:
            try:
                dgram = await asyncio.wait_for(sub.__anext__(), 0.1)
            except asyncio.TimeoutError:
                quiet += 0.1
                continue
            quiet = 0.0
            got.append(int(dgram.data[1:]))
        assert sender.returncode == 0, sender.stderr.read() if sender.stderr else b""
        # Read while open: the state is that of the run just measured.
        ep.states = ep.keepalive_state  # type: ignore[attr-defined]
        packets = stop_tcpdump(dump) if dump is not None else []
    return got, ep, packets


async def wait_for_mdb(lab: Lab, switch: SnoopingSwitch, group: str) -> None:
    """Until the bridge forwards ``group`` to the host (it learned the join report)."""
    for _ in range(60):
        if group in mdb(lab, switch):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the bridge never learned {group}: {mdb(lab, switch)}")


CASES = [(4, "unreached"), (4, "rp_filter"), (6, "unreached")]


@pytest.mark.parametrize(("family", "case"), CASES)
def test_plain_endpoint_loses_the_stream_after_one_membership_interval(
    make_lab: Callable[..., Lab], family: int, case: str
) -> None:
    lab, switch = article_switch(make_lab, family, case)
    count = round(2.0 / PERIOD)
    with lab.inside():
        got, _, _ = run(receive_stream(lab, switch, GROUPS[family], 41200, count, keepalive=False))
    print(f"plain IPv{family} {case}: {len(got)} of {count} delivered, last #{max(got)}")
    assert got[:3] == [0, 1, 2], "the stream flowed at first"
    # Joined at 0; the membership ran out after about one interval, nothing came after.
    assert max(got) < round((MEMBERSHIP + 0.7) / PERIOD), got
    assert GROUPS[family] not in mdb(lab, switch)


def _leaves(packets: list[str], group: str, source: str | None = None) -> list[str]:
    bad = []
    for p in packets:
        if group not in p:
            continue
        if (
            "leave" in p
            or "listener done" in p
            or "to_in { }" in p
            or (source is not None and "block" in p and source in p)
        ):
            bad.append(p)
    return bad


def _bpf(family: int) -> str:
    # MLD rides behind a hop-by-hop header (next header 0).
    return "igmp" if family == 4 else "ip6 and ip6[6] == 0"


@pytest.mark.parametrize(("family", "case"), CASES)
def test_keeper_keeps_the_stream_for_four_intervals_without_a_leave(
    need_tcpdump: None, make_lab: Callable[..., Lab], family: int, case: str
) -> None:
    lab, switch = article_switch(make_lab, family, case)
    group = GROUPS[family]
    count = round(4 * MEMBERSHIP / PERIOD) + 10
    dump = start_tcpdump(lab, lab.host, switch.link.host_if, _bpf(family))
    with lab.inside():
        got, ep, packets = run(
            receive_stream(lab, switch, group, 41201, count, dump, keepalive=KEEPALIVE)
        )
    print(f"keeper IPv{family} {case}: {len(got)} of {count} delivered")
    assert len(got) >= 0.95 * count, f"{len(got)} of {count}"
    assert max(got) == count - 1, "the stream still flows at the end"
    reports = [p for p in packets if group in p and "report" in p]
    # Join reports, then one per keepalive interval: the keeper did it.
    assert len(reports) >= 2 + round(4 * MEMBERSHIP / KEEPALIVE) - 3, packets
    assert _leaves(packets, group) == []
    [state] = ep.states  # type: ignore[attr-defined]
    assert state.interface == switch.link.host_if
    assert state.role == "refreshing"
    assert state.mechanism == "report"
    assert state.watching_queries
    assert state.refreshes >= round(4 * MEMBERSHIP / KEEPALIVE) - 2
    # rp_filter dropped the implausible queries, so the keeper never counted them.
    assert state.querier is None


@pytest.mark.parametrize("family", [4, 6])
def test_keeper_keeps_a_source_specific_membership(
    need_tcpdump: None, make_lab: Callable[..., Lab], family: int
) -> None:
    lab, switch = article_switch(make_lab, family, "unreached")
    group = SSM_GROUPS[family]
    source = switch.link.peer_addr if family == 4 else switch.link.peer_addr6
    assert source is not None
    count = round(4 * MEMBERSHIP / PERIOD) + 10
    dump = start_tcpdump(lab, lab.host, switch.link.host_if, _bpf(family))
    with lab.inside():
        got, _, packets = run(
            receive_stream(
                lab, switch, group, 41202, count, dump, keepalive=KEEPALIVE, sources=[source]
            )
        )
    print(f"keeper IPv{family} SSM: {len(got)} of {count} delivered")
    assert len(got) >= 0.95 * count, f"{len(got)} of {count}"
    # Current-state reports name the source: is_in { source }.
    assert any("is_in" in p and source in p for p in packets), packets
    assert _leaves(packets, group, source) == []


# Runs in the host namespace without CAP_NET_RAW (setpriv): the keeper has no raw
# socket and no packet socket, so it changes the source filter instead.
_UNPRIVILEGED = r"""
import asyncio, dataclasses, json, logging, sys
import mcastio
group, port, ifname, seconds = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
async def main():
    got = []
    async with mcastio.MulticastEndpoint(group, port, interfaces=[ifname], keepalive=0.25) as ep:
        sub = ep.subscribe()
        print("joined", flush=True)
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while (left := end - loop.time()) > 0:
            try:
                # Done once the stream has come and gone quiet for 0.5 s.
                wait = min(left, 0.5) if got else left
                got.append(int((await asyncio.wait_for(sub.__anext__(), wait)).data[1:]))
            except asyncio.TimeoutError:
                break
        states = [dataclasses.asdict(s) for s in ep.keepalive_state]
    print(json.dumps({"got": got, "states": states}), flush=True)
asyncio.run(main())
"""


@pytest.mark.parametrize("family", [4, 6])
def test_keeper_without_cap_net_raw_changes_the_source_filter(
    make_lab: Callable[..., Lab], family: int
) -> None:
    require(None if shutil.which("setpriv") else "setpriv (util-linux) is not installed")
    lab, switch = article_switch(make_lab, family, "unreached")
    group, port = GROUPS[family], 41203
    count = round(4 * MEMBERSHIP / PERIOD) + 10
    sender = start_sender(lab, switch.link.peer_ns, switch.link.peer_if, group, port, count)
    proc = lab.popen(
        lab.host,
        "setpriv", "--bounding-set=-net_raw", "--inh-caps=-net_raw",
        "env", f"PYTHONPATH={ROOT}", sys.executable, "-c", _UNPRIVILEGED,
        group, str(port), switch.link.host_if, str(count * PERIOD + 1.5),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"joined\n"
    run(wait_for_mdb(lab, switch, group))
    release(sender)
    assert sender.wait(timeout=20) == 0
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    result = json.loads(out)
    got = result["got"]
    print(f"unprivileged keeper IPv{family}: {len(got)} of {count} delivered")
    assert len(got) >= 0.95 * count, f"{len(got)} of {count}"
    [state] = result["states"]
    assert state["mechanism"] == "source-filter"
    assert state["role"] == "refreshing"
    assert not state["watching_queries"]
    # Logged once at INFO when it started refreshing, not once per refresh.
    assert err.decode().count("keepalive: no answered query") == 1, err


def test_keeper_says_it_cannot_refresh_an_igmpv2_host_without_cap_net_raw(
    make_lab: Callable[..., Lab],
) -> None:
    require(None if shutil.which("setpriv") else "setpriv (util-linux) is not installed")
    lab, switch = article_switch(make_lab, 4, "unreached")
    lab.sh(lab.host, f"sysctl -qw net.ipv4.conf.{switch.link.host_if}.force_igmp_version=2")
    proc = lab.run(
        lab.host,
        "setpriv", "--bounding-set=-net_raw", "--inh-caps=-net_raw",
        "env", f"PYTHONPATH={ROOT}", sys.executable, "-c", _UNPRIVILEGED,
        GROUPS[4], "41204", switch.link.host_if, "0.8",
    )  # fmt: skip
    [state] = json.loads(proc.stdout.splitlines()[-1])["states"]
    assert (state["role"], state["mechanism"]) == ("unable", "none")
    assert "IGMPv2" in state["reason"]
    assert proc.stderr.count("cannot keep 239.255.12.1 alive on eth1") == 1, proc.stderr


def test_doctor_sees_the_keeper_and_the_querier(
    make_lab: Callable[..., Lab], capsys: pytest.CaptureFixture[str]
) -> None:
    lab, switch = article_switch(make_lab, 4, "unreached")
    host_if = switch.link.host_if

    async def main() -> int:
        # The protocol-style entry, to see keepalive= pass through it too.
        transport, _ = await create_multicast_endpoint(
            asyncio.DatagramProtocol, GROUPS[4], 41205, interfaces=[host_if], keepalive=30
        )
        try:
            assert transport.endpoint.keepalive == 30
            async with Querier(interfaces=[host_if], interval=0.5, ipv6=False) as querier:
                [state] = querier.states
                assert (state.interface, state.address) == (host_if, switch.link.host_addr)
                return cli_main(["doctor", "--duration", "0.3", "--json"])
        finally:
            transport.close()
            await transport.endpoint.aclose()

    with lab.inside():
        run(main())
    findings = json.loads(capsys.readouterr().out)["findings"]
    [keeper] = [f for f in findings if f["id"] == "keeper-active"]
    assert GROUPS[4] in keeper["message"]
    [ours] = [f for f in findings if f["id"] == "querier-active"]
    assert host_if in ours["message"]
    assert not [f for f in findings if f["id"] == "no-querier" and f["interface"] == host_if]


@pytest.mark.parametrize("family", [4, 6])
def test_keeper_stays_idle_while_the_host_answers_a_querier(
    make_lab: Callable[..., Lab], family: int
) -> None:
    lab = make_lab(links=1, ipv6=False)
    switch = add_snooping_switch(lab, membership_interval=MEMBERSHIP, ipv6=family == 6)
    start_querier(lab, switch.link, "mld" if family == 6 else switch.link.peer_addr, 0.1)

    async def main() -> tuple[KeepaliveState, ...]:
        async with MulticastEndpoint(
            GROUPS[family], 41206, interfaces=[switch.link.host_if], keepalive=KEEPALIVE
        ) as ep:
            await asyncio.sleep(4 * KEEPALIVE)
            return ep.keepalive_state

    with lab.inside():
        [state] = run(main())
    assert state.role == "querier"
    assert state.refreshes == 0
    assert state.query_age is not None
    assert state.query_age < KEEPALIVE
    if family == 4:
        assert state.querier == switch.link.peer_addr
    else:
        assert state.querier is not None
        assert state.querier.startswith("fe80:")
