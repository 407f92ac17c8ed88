"""``mcastio querier`` on a snooping bridge: it keeps a plain receiver's membership alive.

The receiver is socat on another port of the switch, with flooding and router-port
learning off there: it gets the stream only while the bridge keeps its membership,
and the bridge keeps it only while the receiver answers our queries.
"""

from __future__ import annotations

import datetime
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

import mcastio
from mcastio.testing import Lab, Link
from tests.conftest import require
from tests.switchlab import (
    SnoopingSwitch,
    SwitchPort,
    add_snooping_switch,
    add_switch_port,
    mdb,
    start_querier,
    start_tcpdump,
    stop_tcpdump,
)

# Queries on the wire, a socat receiver behind a bridge: no drain takes part.
pytestmark = [pytest.mark.lab, pytest.mark.one_path]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(mcastio.__file__)))
MEMBERSHIP = 0.8
INTERVAL = 0.25
PERIOD = 0.04
GROUPS = {4: "239.255.12.2", 6: "ff15::12:2"}
RIVAL = "10.0.0.1"  # lower than any 10.21x address: the rival wins the election

_SENDER = r"""
import socket, sys, time
group, port, dev = sys.argv[1], int(sys.argv[2]), sys.argv[3]
count, interval = int(sys.argv[4]), float(sys.argv[5])
fam = socket.AF_INET6 if ":" in group else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, dev.encode())
target = (group, port, 0, socket.if_nametoindex(dev)) if ":" in group else (group, port)
for i in range(count):
    s.sendto(b"n%d\n" % i, target)
    time.sleep(interval)
"""


def mcastio_cmd(*args: str) -> list[str]:
    return ["env", f"PYTHONPATH={ROOT}", sys.executable, "-m", "mcastio", *args]


def _lab(make_lab: Callable[..., Lab], family: int) -> tuple[Lab, SnoopingSwitch]:
    lab = make_lab(links=1, ipv6=False)
    switch = add_snooping_switch(
        lab, membership_interval=MEMBERSHIP, query_interval=0.5, ipv6=family == 6
    )
    return lab, switch


def _receiver_port(lab: Lab, switch: SnoopingSwitch, number: int) -> SwitchPort:
    port = add_switch_port(lab, switch, number)
    # Only the receiver's own membership may bring it the stream: never a router
    # port. (Flooding stays on: it carries our queries to it. With a querier
    # present, the bridge sends an unregistered group to router ports only.)
    lab.sh(switch.ns, f"bridge link set dev {port.port} mcast_router 0")
    for key in ("ipv4.conf.veth0.igmpv3", "ipv6.conf.veth0.mldv2"):
        lab.sh(port.ns, f"sysctl -qw net.{key}_unsolicited_report_interval=100")
    return port


def _drop_queries(lab: Lab, ns: str) -> None:
    """A host firewall that drops every IGMP and MLD query: the control receiver."""
    lab.run(ns, "nft", "add", "table", "inet", "noquery")
    lab.run(ns, "nft", "add chain inet noquery in { type filter hook input priority 0; }")
    lab.run(ns, "nft", "add", "rule", "inet", "noquery", "in", "igmp", "type",
            "membership-query", "drop")  # fmt: skip
    lab.run(ns, "nft", "add", "rule", "inet", "noquery", "in", "icmpv6", "type",
            "mld-listener-query", "drop")  # fmt: skip


def _link_local(lab: Lab, ns: str, ifname: str) -> str:
    out = lab.run(ns, "ip", "-6", "-o", "addr", "show", "dev", ifname, "scope", "link").stdout
    return out.split()[3].split("/")[0]


@pytest.mark.parametrize("family", [4, 6])
def test_querier_keeps_a_plain_receiver_on_another_port(
    need_tcpdump: None, make_lab: Callable[..., Lab], family: int
) -> None:
    lab, switch = _lab(make_lab, family)
    group, port_number = GROUPS[family], 41300 + family
    rx = _receiver_port(lab, switch, 3)
    # The control: joined the same way, but its firewall drops our queries.
    deaf = _receiver_port(lab, switch, 5)
    _drop_queries(lab, deaf.ns)
    host_if = switch.link.host_if
    own = switch.link.host_addr if family == 4 else _link_local(lab, lab.host, host_if)
    # The querier's own port is no router port either, so a plain receiver on the
    # querier's host, too, is kept only by answering (its looped-back) queries.
    lab.sh(switch.ns, "bridge link set dev p-host mcast_router 0")
    for key in ("ipv4.conf.default.igmpv3", "ipv6.conf.default.mldv2"):
        lab.sh(lab.host, f"sysctl -qw net.{key}_unsolicited_report_interval=100")
    querier = lab.popen(
        lab.host,
        *mcastio_cmd("querier", "-i", host_if, "--interval", str(INTERVAL), f"-{family}"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    dump = start_tcpdump(lab, rx.ns, rx.ifname, "igmp" if family == 4 else "ip6 and ip6[6] == 0")
    time.sleep(0.6)  # the bridge has heard a querier and waited its max response
    listener, control, on_host = (
        lab.peer_listen(
            Link(index=99, host_if=host_if, peer_if=ifname, peer_ns=ns,
                 host_addr=switch.link.host_addr, peer_addr=""),
            group, port_number,
        )
        for ns, ifname in ((rx.ns, rx.ifname), (deaf.ns, deaf.ifname), (lab.host, host_if))
    )  # fmt: skip
    count = round(4 * MEMBERSHIP / PERIOD) + 10
    sender = lab.popen(
        switch.link.peer_ns, sys.executable, "-c", _SENDER, group, str(port_number),
        switch.link.peer_if, str(count), str(PERIOD), stderr=subprocess.PIPE,
    )  # fmt: skip
    assert sender.wait(timeout=20) == 0
    time.sleep(0.2)
    table = mdb(lab, switch)
    got = listener.lines()
    lost = control.lines()
    here = on_host.lines()
    packets = stop_tcpdump(dump)
    out, _err = stop(querier)
    print(
        f"querier IPv{family}: receiver {len(got)}, on the querier's host {len(here)}, "
        f"deaf control {len(lost)} of {count}; {out.decode()!r}"
    )
    assert len(got) >= 0.95 * count, (len(got), count, out, packets[:40], table)
    assert got[-1] == b"n%d" % (count - 1)
    assert len(here) >= 0.95 * count, f"on the querier's host: {len(here)} of {count}"
    # Same bridge, same querier: the receiver that cannot answer loses the stream
    # one membership interval after its join, so answering is what kept the other.
    assert lost[:3] == [b"n0", b"n1", b"n2"], lost
    assert int(lost[-1][1:]) < (MEMBERSHIP + 0.7) / PERIOD, lost
    # The receiver's own membership, on its own port, carried the stream.
    assert any(group in line and rx.port in line for line in table.splitlines()), table
    assert f"{host_if} {'IGMPv3' if family == 4 else 'MLDv2'}: querier, from {own}" in out.decode()
    queries = [p for p in packets if "query" in p]
    assert len(queries) >= 4 * MEMBERSHIP / INTERVAL - 2, packets
    # Every query carries the host's own address, none 0.0.0.0 or any other.
    assert all(f" {own} > " in q for q in queries), queries
    rx_addr = rx.addr if family == 4 else _link_local(lab, rx.ns, rx.ifname)
    reports = [p for p in packets if f" {rx_addr} > " in p and "report" in p and group in p]
    # It answered query after query: that is what kept it.
    assert len(reports) >= 4 * MEMBERSHIP / INTERVAL - 3, packets


def stop(querier: subprocess.Popen[bytes]) -> tuple[bytes, bytes]:
    """Ctrl-C the querier; like tcpdump it closes its sockets, prints its summary and exits 0."""
    querier.send_signal(signal.SIGINT)
    out, err = querier.communicate(timeout=10)
    assert querier.returncode == 0, err
    assert b"queries sent" in out, out
    return out, err


def _seconds(line: str) -> float:
    stamp = datetime.datetime.strptime(line.split()[0], "%H:%M:%S.%f")
    return stamp.hour * 3600 + stamp.minute * 60 + stamp.second + stamp.microsecond / 1e6


def test_querier_stands_down_for_a_lower_address_and_resumes_after_it_goes(
    need_tcpdump: None,
    make_lab: Callable[..., Lab],
) -> None:
    lab, switch = _lab(make_lab, 4)
    rival_port = add_switch_port(lab, switch, 4)
    host_if, own = switch.link.host_if, switch.link.host_addr
    dump = start_tcpdump(lab, lab.host, host_if, "igmp[0] == 0x11")
    querier = lab.popen(
        lab.host,
        *mcastio_cmd("querier", "-i", host_if, "--interval", str(INTERVAL), "-4"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    # The rival comes once ours has started and queried: a Python start on a busy
    # machine can take longer than any fixed wait.
    assert querier.stdout is not None
    started = querier.stdout.readline()
    assert f"{host_if} IGMPv3: querier, from {own}".encode() in started, started
    time.sleep(0.3)
    rival = start_querier(lab, rival_port, RIVAL, interval=INTERVAL, max_response=0.1)
    time.sleep(1.2)
    rival.kill()
    time.sleep(1.2)
    rest, _err = stop(querier)
    out = started + rest
    packets = stop_tcpdump(dump)
    ours = [_seconds(p) for p in packets if f" {own} > 224.0.0.1" in p]
    print("election on the wire:", [p.split(" IP ")[0] + " " + p.split(") ")[-1] for p in packets])
    theirs = [_seconds(p) for p in packets if f" {RIVAL} > 224.0.0.1" in p]
    assert theirs, packets
    first, last = theirs[0], theirs[-1]
    assert any(t < first for t in ours), "we were the querier before the rival came"
    # Stood down at the rival's first query (our own then in flight at most).
    assert [t for t in ours if first + 0.05 < t <= last] == [], packets
    # Back after the other-querier-present interval: 2 x 0.25 + 0.125 / 2 s.
    resumed = [t for t in ours if t > last]
    assert resumed, packets
    assert 0.5 <= resumed[0] - last <= 0.5625 + 0.5, (resumed[0] - last, packets)
    lines = out.decode().splitlines()
    assert f"{host_if} IGMPv3: non-querier, {RIVAL} has the lower address" in lines
    assert lines.index(f"{host_if} IGMPv3: querier, from {own}") > 0


def test_querier_without_cap_net_raw_says_so(make_lab: Callable[..., Lab]) -> None:
    require(None if subprocess.run(["which", "setpriv"], capture_output=True).returncode == 0
            else "setpriv (util-linux) is not installed")  # fmt: skip
    lab = make_lab(links=1, ipv6=False)
    proc = lab.run(
        lab.host,
        "setpriv", "--bounding-set=-net_raw", "--inh-caps=-net_raw",
        *mcastio_cmd("querier", "--duration", "0.1"),
        check=False,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "CAP_NET_RAW" in proc.stderr
    assert "root" in proc.stderr
