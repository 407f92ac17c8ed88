"""The mcastio command on real kernels: the multi-homed lab and the article's network.

The article's network: the host's eth0 carries the default route; eth1 leads,
reachable only locally, into a Linux bridge with IGMP snooping and a short
membership interval, with a sender on the bridge and (maybe) a querier.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

import mcastio
from mcastio import MulticastEndpoint
from mcastio._cli import main
from mcastio._cli.capture import capture_igmp
from mcastio.testing import Lab
from tests.conftest import run, skip_or_fail
from tests.switchlab import SnoopingSwitch, add_snooping_switch, mdb, start_querier

pytestmark = pytest.mark.lab

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(mcastio.__file__)))
GROUP = "239.255.3.3"
IMPLAUSIBLE = "192.168.77.1"


def mcastio_cmd(*args: str) -> list[str]:
    return ["env", f"PYTHONPATH={ROOT}", sys.executable, "-m", "mcastio", *args]


def start_listen(lab: Lab, *args: str) -> subprocess.Popen[bytes]:
    return lab.popen(
        lab.host, *mcastio_cmd("listen", *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def finish(proc: subprocess.Popen[bytes], timeout: float = 15) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out.decode(), err.decode()


# Numbered datagrams from a peer, every ``interval`` seconds, so a test can tell
# which ones got through.
_SENDER = r"""
import socket, sys, time
group, port, addr = sys.argv[1], int(sys.argv[2]), sys.argv[3]
count, interval = int(sys.argv[4]), float(sys.argv[5])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(addr))
for i in range(count):
    s.sendto(b"n%d" % i, (group, port))
    time.sleep(interval)
"""


def start_stream(
    lab: Lab, switch: SnoopingSwitch, port: int, count: int, interval: float
) -> subprocess.Popen[bytes]:
    link = switch.link
    return lab.popen(
        link.peer_ns, sys.executable, "-c", _SENDER, GROUP, str(port), link.peer_addr,
        str(count), str(interval), stderr=subprocess.PIPE,
    )  # fmt: skip


@pytest.fixture
def article_lab(make_lab: Callable[..., Lab]) -> tuple[Lab, SnoopingSwitch]:
    """eth0 with the default route, eth1 into a snooping bridge; strict rp_filter."""
    lab = make_lab(
        links=1,
        ipv6=False,
        sysctls={
            "net.ipv4.conf.all.rp_filter": "1",
            # The join's repeated report follows within 0.1 s instead of up to 1 s.
            "net.ipv4.conf.default.igmpv3_unsolicited_report_interval": "100",
        },
    )
    switch = add_snooping_switch(lab, membership_interval=1.5, query_interval=0.5)
    return lab, switch


def received_numbers(stdout: str) -> list[int]:
    lines = [json.loads(line) for line in stdout.splitlines()]
    assert "summary" in lines.pop()
    assert all(obj["interface"] == "eth1" for obj in lines)
    return [int(base64.b64decode(obj["data"])[1:]) for obj in lines]


def run_stream(
    lab: Lab, switch: SnoopingSwitch, port: int, during: Callable[[], None] = lambda: None
) -> list[int]:
    """Listen while the sender streams 30 datagrams over 3 s; run ``during`` meanwhile."""
    listener = start_listen(lab, f"{GROUP}:{port}", "--json", "--duration", "3.5")
    lab.wait_for_membership(lab.host, switch.link.host_if, GROUP, listener)
    sender = start_stream(lab, switch, port, count=30, interval=0.1)
    during()
    assert sender.wait(timeout=10) == 0
    code, out, err = finish(listener)
    assert code == 0, err
    return received_numbers(out)


def test_plausible_querier_keeps_traffic_flowing(article_lab: tuple[Lab, SnoopingSwitch]) -> None:
    lab, switch = article_lab
    start_querier(lab, switch.link, switch.link.host_addr.rsplit(".", 1)[0] + ".254")
    got = run_stream(lab, switch, 41001)
    # The host answers the queries, so the bridge keeps forwarding past 1.5 s.
    assert max(got) >= 27, got
    assert len(got) >= 27
    assert GROUP in mdb(lab, switch)


def test_implausible_querier_and_strict_rp_filter_stop_traffic_and_doctor_says_why(
    article_lab: tuple[Lab, SnoopingSwitch], capsys: pytest.CaptureFixture[str]
) -> None:
    lab, switch = article_lab
    start_querier(lab, switch.link, IMPLAUSIBLE)
    codes: list[int] = []

    def doctor() -> None:
        with lab.inside():
            codes.append(main(["doctor", GROUP, "--duration", "1", "--json"]))

    got = run_stream(lab, switch, 41002, during=doctor)
    assert got[:3] == [0, 1, 2], "traffic flowed at first"
    # The 1.5 s membership ran out unanswered: nothing of the last 0.8 s arrived.
    assert max(got) < 22, got
    assert GROUP not in mdb(lab, switch)

    findings = json.loads(capsys.readouterr().out)["findings"]
    assert codes == [1]
    [bad] = [f for f in findings if f["id"] == "querier-implausible-address"]
    assert bad["severity"] == "error"
    assert bad["interface"] == "eth1"
    assert IMPLAUSIBLE in bad["message"]
    assert "rp_filter" in bad["message"]
    assert any("IPReversePathFilter" in e and "rose by 0 " not in e for e in bad["evidence"])
    rp = [f for f in findings if f["id"] == "rp-filter-strict" and f["interface"] == "eth1"]
    assert rp[0]["severity"] == "error"
    assert {"id", "severity", "interface", "message", "evidence", "fix"} == set(rp[0])


def test_no_querier_is_reported(
    article_lab: tuple[Lab, SnoopingSwitch], capsys: pytest.CaptureFixture[str]
) -> None:
    lab, _switch = article_lab
    with lab.inside():
        code = main(["doctor", "--duration", "0.5"])
    out = capsys.readouterr().out
    # One block for every interface without a querier (eth0 has none either).
    [head] = [line for line in out.splitlines() if " no-querier [" in line]
    assert "eth1" in head.split("[")[1]
    assert "few minutes and then stops" in out.replace("\n  ", " ")
    assert "querier-implausible-address" not in out
    assert code == 0
    assert max(len(line) for line in out.splitlines()) <= 80


def test_listen_attributes_each_datagram_to_its_interface(lab: Lab) -> None:
    listener = start_listen(lab, "239.255.4.4:41003", "--json", "--count", "3")
    for link in lab.link:
        lab.wait_for_membership(lab.host, link.host_if, "239.255.4.4", listener)
    for link in lab.link:
        lab.peer_send(link, "239.255.4.4", 41003, f"from {link.host_if}".encode())
    code, out, err = finish(listener)
    assert code == 0, err
    seen = [json.loads(line) for line in out.splitlines()]
    summary = seen.pop()["summary"]
    assert summary["datagrams"] == 3
    assert {name: c["datagrams"] for name, c in summary["interfaces"].items()} == {
        "eth0": 1,
        "eth1": 1,
        "eth2": 1,
    }
    assert (summary["kernel_dropped"], summary["queue_dropped"]) == (0, 0)
    assert len(seen) == 3
    for obj in seen:
        payload = base64.b64decode(obj["data"]).decode()
        assert payload == f"from {obj['interface']}"
        link = next(lk for lk in lab.link if lk.host_if == obj["interface"])
        assert obj["source"].startswith(link.peer_addr + ":")
        assert obj["group"] == "239.255.4.4"
    assert "summary for 239.255.4.4:41003" in err
    for link in lab.link:
        assert any(line.split()[:2] == [link.host_if, "1"] for line in err.splitlines())


def test_listen_ipv6_group_on_a_named_interface(lab: Lab) -> None:
    listener = start_listen(lab, "[ff12::4:4]:41004", "--interface", "eth2", "--count", "1")
    lab.wait_for_membership(lab.host, "eth2", "ff12::4:4", listener)
    lab.peer_send(lab.link[2], "ff12::4:4", 41004, b"six")
    code, out, err = finish(listener)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[1].split()[:3] == ["TIME", "IF", "SOURCE"]
    # A link-scope group goes out with the peer's link-local source address.
    assert lines[2].split()[1] == "eth2"
    assert lines[2].split()[2].startswith("[fe80:")
    assert "[ff12::4:4]:41004" in lines[2].split()
    assert lines[3] == "    six"
    assert lines[-2].split()[:2] == ["eth2", "1"]
    assert lines[-1].strip().startswith("dropped on this host: 0 by the kernel")


def test_listen_prints_the_summary_on_ctrl_c(lab: Lab) -> None:
    listener = start_listen(lab, "239.255.4.5:41005")
    lab.wait_for_membership(lab.host, "eth1", "239.255.4.5", listener)
    lab.peer_send(lab.link[1], "239.255.4.5", 41005, b"one")
    assert listener.stdout is not None
    deadline = time.monotonic() + 5
    lines: list[bytes] = []
    while time.monotonic() < deadline and not any(b" one" in ln for ln in lines):
        lines.append(listener.stdout.readline())
    listener.send_signal(signal.SIGINT)
    code, out, _err = finish(listener)
    assert code == 0
    summary = out.splitlines()
    assert summary[-5] == "summary for 239.255.4.5:41005:"
    assert [ln.split()[:2] for ln in summary[-4:-1]] == [
        ["eth0", "0"],
        ["eth1", "1"],
        ["eth2", "0"],
    ]


def test_send_one_copy_per_interface_and_only_named_ones(lab: Lab) -> None:
    listeners = [lab.peer_listen(link, "239.255.4.6", 41006) for link in lab.link]
    proc = lab.run(
        lab.host, *mcastio_cmd("send", "239.255.4.6:41006", "hello", "--count", "2",
                               "--interval", "0.05"), check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert [ln.split()[1:] for ln in lines[:6]] == [
        [f"eth{i}", "sent", "5", "bytes"] for _ in range(2) for i in range(3)
    ]
    assert lines[6] == "sent 6 datagrams (30 bytes) to 239.255.4.6:41006 in 2 rounds, 0 failed"
    named = lab.run(
        lab.host, *mcastio_cmd("send", "239.255.4.6:41006", "only1", "--interface", "eth1"),
        check=False,
    )  # fmt: skip
    assert named.returncode == 0, named.stderr
    got = [listener.lines() for listener in listeners]
    assert [b"".join(g) for g in got] == [b"hellohello", b"hellohelloonly1", b"hellohello"]


def test_send_reports_an_interface_it_cannot_use(lab: Lab) -> None:
    lab.sh(lab.host, "ip link set eth2 down")
    proc = lab.run(
        lab.host, *mcastio_cmd("send", "239.255.4.7:41007", "x", "--interface", "eth1",
                               "--interface", "eth2"), check=False,
    )  # fmt: skip
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert lines[0].split()[1:] == ["eth1", "sent", "1", "byte"]
    assert lines[1].split()[1:3] == ["eth2", "FAILED:"]


def test_interfaces_shows_default_route_and_kernel_memberships(
    lab: Lab, capsys: pytest.CaptureFixture[str]
) -> None:
    async def check() -> tuple[int, int]:
        async with MulticastEndpoint("239.255.4.8", 41008, interfaces=["eth1"]):
            json_code = main(["interfaces", "--json"])
            text_code = main(["interfaces"])
        return json_code, text_code

    with lab.inside():
        assert run(check()) == (0, 0)
    out = capsys.readouterr().out
    start = out.index("\n}\n") + 3
    data = json.loads(out[:start])
    text = out[start:]
    rows = {i["name"]: i for i in data["interfaces"]}
    assert rows["eth0"]["default_route"] is True
    assert rows["eth1"]["default_route"] is False
    assert "10.200.1.1/24" in rows["eth1"]["addresses"]
    assert rows["eth1"]["eligible"]["ipv4"] is True
    assert rows["lo"]["eligible"]["ipv4"] is False
    assert "239.255.4.8" in [m["group"] for m in rows["eth1"]["memberships"]]
    assert "239.255.4.8" not in [m["group"] for m in rows["eth2"]["memberships"]]
    assert all(k in rows["eth1"] for k in ("index", "addresses", "flags", "eligible"))
    assert max(len(line) for line in text.splitlines()) <= 80
    assert any(line.startswith("*") and " eth0 " in line for line in text.splitlines())


def test_doctor_without_cap_net_raw_says_the_querier_check_was_skipped(lab: Lab) -> None:
    if shutil.which("setpriv") is None:
        skip_or_fail("setpriv (util-linux) is needed to drop CAP_NET_RAW")
    # Root without CAP_NET_RAW: everything but the packet capture still works.
    proc = lab.run(
        lab.host, "setpriv", "--bounding-set=-net_raw", "--inh-caps=-net_raw",
        *mcastio_cmd("doctor", "--duration", "0.2", "--json"), check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    findings = json.loads(proc.stdout)["findings"]
    [skipped] = [f for f in findings if f["id"] == "no-querier"]
    assert skipped["severity"] == "info"
    assert skipped["message"].startswith("Skipped the querier check")
    assert "CAP_NET_RAW" in skipped["message"]
    assert [f["interface"] for f in findings if f["id"] == "multi-homed-default-route"] == ["eth0"]


@pytest.mark.parametrize(
    "argv",
    [
        ["listen", "239.255.4.9:41009", "--duration", "0.1"],
        ["send", "239.255.4.9:41009", "x"],
        ["ping", "239.255.4.9:41009", "-c", "1"],
        ["querier", "--duration", "0.1"],
    ],
)
def test_an_unknown_interface_is_a_usage_error_in_every_command(lab: Lab, argv: list[str]) -> None:
    """Friction 8: listen printed an empty summary after the error, and the exit
    status was 1 in listen, send and ping but 2 in querier."""
    proc = lab.run(lab.host, *mcastio_cmd(*argv, "--interface", "eth7"), check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("mcastio: unknown interface name(s) 'eth7'")
    assert proc.stdout == ""


def test_capture_sees_only_igmp_and_names_the_interface(lab: Lab) -> None:
    start_querier(lab, lab.link[1], "10.200.1.254", interval=0.2)
    noise = lab.popen(
        lab.link[0].peer_ns, sys.executable, "-c", _SENDER, "239.255.4.10", "41010",
        lab.link[0].peer_addr, "100", "0.01", stderr=subprocess.PIPE,
    )  # fmt: skip
    seen: list[tuple[str, int]] = []
    with lab.inside():
        capture_igmp(0.6, lambda ifname, packet, _when: seen.append((ifname, packet[9])))
    noise.kill()
    noise.wait()
    # The BPF filter keeps the UDP stream on eth0 out; the queries on eth1 get in.
    assert seen
    assert set(seen) == {("eth1", 2)}


# MLDv1 general queries from a chosen source; the kernel adds the checksum, the
# sticky IPV6_HOPOPTS (54) adds the Router Alert that MLD requires.
_MLD_QUERIER = r"""
import socket, struct, sys, time
source, dev = sys.argv[1], sys.argv[2]
index = socket.if_nametoindex(dev)
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.bind((source, 0, 0, index if source.startswith("fe80") else 0))
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 1)
s.setsockopt(socket.IPPROTO_IPV6, 54, bytes([0, 0, 5, 2, 0, 0, 1, 0]))
query = struct.pack("!BBHHH16s", 130, 0, 0, 200, 0, bytes(16))
while True:
    s.sendto(query, ("ff02::1", 0, 0, index))
    time.sleep(0.2)
"""


def test_doctor_flags_an_mld_querier_without_a_link_local_source(
    lab: Lab, capsys: pytest.CaptureFixture[str]
) -> None:
    eth1, eth2 = lab.link[1], lab.link[2]
    shown = lab.run(eth1.peer_ns, "ip", "-6", "-br", "addr", "show", "dev", eth1.peer_if)
    link_local = next(a.split("/")[0] for a in shown.stdout.split() if a.startswith("fe80:"))
    assert eth2.peer_addr6 is not None
    for link, source in ((eth1, link_local), (eth2, eth2.peer_addr6)):
        lab.popen(link.peer_ns, sys.executable, "-c", _MLD_QUERIER, source, link.peer_if)
    with lab.inside():
        code = main(["doctor", "ff05::1:3", "--duration", "0.6", "--json"])
    findings = json.loads(capsys.readouterr().out)["findings"]
    assert code == 1
    [seen] = [f for f in findings if f["id"] == "querier-seen"]
    assert seen["interface"] == "eth1"
    assert link_local in seen["message"]
    [bad] = [f for f in findings if f["id"] == "querier-implausible-address"]
    assert bad["interface"] == "eth2"
    assert bad["severity"] == "error"
    assert eth2.peer_addr6 in bad["message"]
    mld_missing = [
        f["interface"] for f in findings if f["id"] == "no-querier" and "MLD" in f["message"]
    ]
    assert mld_missing == ["eth0"]


def test_send_and_listen_say_so_when_no_interface_can_carry_the_group(
    make_lab: Callable[..., Lab], capsys: pytest.CaptureFixture[str]
) -> None:
    lab = make_lab(links=1, ipv6=False)
    lab.sh(lab.host, "ip link set eth0 down")
    with lab.inside():
        assert main(["send", "239.255.31.1:5031", "hello"]) == 1
        out = capsys.readouterr().out
        assert "no interface can carry 239.255.31.1 right now" in out
        assert main(["listen", "239.255.31.1:5031", "--duration", "0.2"]) == 1
        err = capsys.readouterr().err
        assert "no interface can carry 239.255.31.1" in err
        assert main(["listen", "239.255.31.1:5031", "-i", "eth0", "--duration", "0.2"]) == 1
        err = capsys.readouterr().err
    # The library's warning, for people: one prefixed message in CLI words, and
    # nothing about waiting, since listen exits.
    lines = err.splitlines()
    assert lines[0] == "mcastio: warning: no interface can carry 239.255.31.1:"
    assert "  eth0: no carrier" in lines or "  eth0: down" in lines, err
    assert "  (--interface was given)" in lines
    assert "selector" not in err
    assert "waiting" not in err
    assert lines[-1] == "mcastio: no interface can carry 239.255.31.1 on this host now"
