"""``mcastio listen`` on a real kernel: losses, drops, TTL, SSM, several groups."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from mcastio.testing import Lab
from tests.test_cli_lab import finish, mcastio_cmd, start_listen

pytestmark = pytest.mark.lab

# Numbered datagrams with the send --seq header, in a chosen order, from a peer.
_SEQ_SENDER = r"""
import socket, sys, time
from mcastio._cli.seqheader import encode_header
group, port, addr = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(addr))
for seq in map(int, sys.argv[4].split(",")):
    s.sendto(encode_header(77, seq, time.time_ns()) + b"x", (group, port))
"""

# A flood of 1400-byte datagrams, as fast as the peer can send them.
_FLOOD = r"""
import socket, sys
group, port, addr, count = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(addr))
for i in range(count):
    s.sendto(bytes(1400), (group, port))
"""


def joined(lab: Lab, proc: subprocess.Popen[bytes], group: str, ifname: str = "eth1") -> None:
    lab.wait_for_membership(lab.host, ifname, group, proc)


def json_lines(out: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    objs = [json.loads(line) for line in out.splitlines()]
    summary = objs.pop()["summary"]
    assert isinstance(summary, dict)
    return objs, summary


def netem_support(lab: Lab) -> bool:
    """Whether tc netem works here (CONFIG_NET_SCH_NETEM; many kernels lack it)."""
    link = lab.link[2]
    probe = lab.run(link.peer_ns, "tc", "qdisc", "add", "dev", link.peer_if, "root",
                    "netem", "delay", "1ms", check=False)  # fmt: skip
    if probe.returncode != 0:
        return False
    lab.run(link.peer_ns, "tc", "qdisc", "del", "dev", link.peer_if, "root")
    return True


def add_loss(lab: Lab, port: int) -> str:
    """Make link 1's peer lose datagrams to ``port``: with tc netem (20% at random)
    where the kernel has it, else with nftables (exactly every fifth)."""
    link = lab.link[1]
    if netem_support(lab):
        lab.run(link.peer_ns, "tc", "qdisc", "add", "dev", link.peer_if, "root",
                "netem", "loss", "20%")  # fmt: skip
        return "netem"
    hook = f"{{ type filter hook egress device {link.peer_if} priority 0 ; }}"
    lab.run(link.peer_ns, "nft", "add", "table", "netdev", "loss")
    lab.run(link.peer_ns, "nft", "add", "chain", "netdev", "loss", "out", hook)
    lab.run(link.peer_ns, "nft", "add", "rule", "netdev", "loss", "out",
            *f"udp dport {port} numgen inc mod 5 == 2 drop".split())  # fmt: skip
    return "nft"


def test_loss_in_the_lab_is_counted_per_interface_and_source(lab: Lab) -> None:
    how = add_loss(lab, 42001)
    listener = start_listen(lab, "239.255.5.1:42001", "--json")
    joined(lab, listener, "239.255.5.1")
    send = lab.run(
        lab.link[1].peer_ns, *mcastio_cmd("send", "239.255.5.1:42001", "--size", "100",
                                          "--seq", "--count", "50", "--rate", "1000", "-q"),
    )  # fmt: skip
    assert send.stdout.startswith("sent 50 datagrams (6400 bytes)"), send.stdout
    time.sleep(0.3)
    listener.send_signal(signal.SIGTERM)
    code, out, err = finish(listener)
    assert code == 0, err
    objs, summary = json_lines(out)
    seqs = sorted(int(o["seq"]) for o in objs)
    if how == "nft":
        assert seqs == [s for s in range(50) if s % 5 != 2]
    [stream] = summary["streams"]
    assert (stream["interface"], stream["source"]) == ("eth1", lab.link[1].peer_addr)
    expected = seqs[-1] - seqs[0] + 1
    lost = expected - len(seqs)
    assert lost > 0
    assert (stream["received"], stream["expected"], stream["lost"]) == (len(seqs), expected, lost)
    assert stream["loss_percent"] == round(100 * lost / expected, 2)
    assert (stream["duplicates"], stream["reordered"]) == (0, 0)
    delay = stream["delay_ms"]
    assert 0 <= delay["min"] <= delay["avg"] <= delay["max"] < 1000
    row = next(line for line in err.splitlines() if line.split()[:2] == ["eth1", "10.200.1.2"])
    assert row.split()[2:6] == [str(len(seqs)), str(lost), f"{100 * lost / expected:.1f}%", "0"]


def test_duplicates_and_reordering_are_reported(lab: Lab) -> None:
    listener = start_listen(lab, "239.255.5.2:42002", "--count", "7")
    joined(lab, listener, "239.255.5.2")
    link = lab.link[1]
    lab.run(link.peer_ns, sys.executable, "-c", _SEQ_SENDER, "239.255.5.2", "42002",
            link.peer_addr, "0,1,2,2,4,3,6")  # fmt: skip
    code, out, err = finish(listener)
    assert code == 0, err
    lines = out.splitlines()
    assert [ln.split()[6] for ln in lines[2:9]] == ["#0", "#1", "#2", "#2", "#4", "#3", "#6"]
    row = next(line for line in lines if line.split()[:2] == ["eth1", link.peer_addr])
    # 0..6 expected, 6 distinct arrived (5 never did), 2 twice, 3 after 4.
    assert row.split()[2:7] == ["7", "1", "14.3%", "1", "1"]


def test_kernel_drops_show_in_the_summary_printed_on_sigterm(lab: Lab) -> None:
    listener = start_listen(lab, "239.255.5.3:42003", "--quiet")
    joined(lab, listener, "239.255.5.3")
    link = lab.link[1]
    # A stopped reader: the socket buffer fills and the kernel drops the rest.
    listener.send_signal(signal.SIGSTOP)
    lab.run(link.peer_ns, sys.executable, "-c", _FLOOD, "239.255.5.3", "42003",
            link.peer_addr, "3000")  # fmt: skip
    listener.send_signal(signal.SIGCONT)
    time.sleep(0.3)
    # The kernel reports a socket's drop count with the next datagram it queues.
    lab.peer_send(link, "239.255.5.3", 42003, b"after")
    time.sleep(0.2)
    listener.send_signal(signal.SIGTERM)
    code, out, err = finish(listener)
    assert code == 0, err
    lines = out.splitlines()
    # --quiet: the status line and the summary, nothing per datagram.
    assert lines[0] == "listening on 239.255.5.3:42003 on eth0, eth1, eth2"
    assert lines[1] == "summary for 239.255.5.3:42003:"
    received = int(lines[3].split()[1])
    match = re.fullmatch(
        r"  dropped on this host: (\d+) by the kernel \(socket buffer full\), 0 in the queue",
        lines[5],
    )
    assert match is not None, out
    dropped = int(match.group(1))
    assert received > 0
    assert dropped > 0
    assert received + dropped <= 3001


def test_ttl_hop_limit_and_several_groups_of_both_families(lab: Lab) -> None:
    listener = start_listen(lab, "239.255.5.4:42004", "[ff12::5:4]:42004", "--json", "--count", "2")
    joined(lab, listener, "239.255.5.4")
    joined(lab, listener, "ff12::5:4")
    link = lab.link[1]
    for target, ttl in (("239.255.5.4:42004", "5"), ("[ff12::5:4]:42004", "3")):
        lab.run(link.peer_ns, *mcastio_cmd("send", target, "hi", "--ttl", ttl))
    code, out, err = finish(listener)
    assert code == 0, err
    objs, summary = json_lines(out)
    assert sorted((o["group"], o["ttl"]) for o in objs) == [("239.255.5.4", 5), ("ff12::5:4", 3)]
    assert summary["datagrams"] == 2
    assert "listening on 239.255.5.4:42004 on eth0, eth1, eth2" in err
    assert "listening on [ff12::5:4]:42004 on eth0, eth1, eth2" in err
    assert "summary for 239.255.5.4:42004 [ff12::5:4]:42004:" in err


def test_hex_dump(lab: Lab) -> None:
    listener = start_listen(lab, "239.255.5.5:42005", "--hex", "--count", "1")
    joined(lab, listener, "239.255.5.5")
    lab.peer_send(lab.link[1], "239.255.5.5", 42005, b"\x00\x01ABC")
    code, out, err = finish(listener)
    assert code == 0, err
    assert "    0000  00 01 41 42 43" in out
    assert out.splitlines()[3].endswith("  ..ABC")


def test_source_specific_listen_hears_only_the_named_sender(lab: Lab) -> None:
    link = lab.link[1]
    lab.sh(link.peer_ns, f"ip addr add 10.200.1.3/24 dev {link.peer_if}")
    listener = start_listen(
        lab, "232.5.5.6:42006", "--source", link.peer_addr, "--json", "--count", "1"
    )
    joined(lab, listener, "232.5.5.6")
    lab.peer_send(link, "232.5.5.6", 42006, b"other", source="10.200.1.3")
    lab.peer_send(link, "232.5.5.6", 42006, b"named", source=link.peer_addr)
    code, out, err = finish(listener)
    assert code == 0, err
    objs, _summary = json_lines(out)
    assert [o["source"].split(":")[0] for o in objs] == [link.peer_addr]
    assert f"listening on 232.5.5.6:42006 from {link.peer_addr} on" in err


def test_fail_empty_exits_1_when_nothing_arrived(lab: Lab) -> None:
    quiet = lab.run(
        lab.host, *mcastio_cmd("listen", "239.255.5.7:42007", "-d", "0.2", "--fail-empty"),
        check=False,
    )  # fmt: skip
    assert quiet.returncode == 1
    assert "mcastio: nothing arrived" in quiet.stderr
    assert "summary for 239.255.5.7:42007:" in quiet.stdout
    plain = lab.run(lab.host, *mcastio_cmd("listen", "239.255.5.7:42007", "-d", "0.2"))
    assert plain.returncode == 0


def test_progress_prints_one_line_per_period_instead_of_each_datagram(lab: Lab) -> None:
    # Long enough for the sender's own start on a busy machine.
    listener = start_listen(lab, "239.255.5.8:42008", "--progress", "0.2", "-d", "3")
    joined(lab, listener, "239.255.5.8")
    link = lab.link[1]
    lab.run(link.peer_ns, *mcastio_cmd("send", "239.255.5.8:42008", "--size", "1000",
                                       "--count", "30", "--rate", "100", "-q"))  # fmt: skip
    code, out, err = finish(listener)
    assert code == 0, err
    progress = [ln for ln in out.splitlines() if re.match(r"\s*\d+\.\ds ", ln)]
    assert len(progress) >= 4, out
    for line in progress:
        assert re.fullmatch(
            r"\s*\d+\.\ds\s+\d+ datagrams?\s+\d+/s\s+\d+\.\d\d Mbit/s lost 0 drops \d+/\d+", line
        ), line
    totals = [int(ln.split()[1]) for ln in progress]
    assert totals == sorted(totals)
    assert "TIME" not in out  # no per-datagram header or lines
    assert any(ln.split()[:2] == ["eth1", "30"] for ln in out.splitlines())
