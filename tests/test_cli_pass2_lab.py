"""The command line's second pass (issue 20) on a real kernel, in one shared lab."""

from __future__ import annotations

import json
import re
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mcastio.testing import Lab, read_capture
from tests.conftest import module_lab
from tests.test_cli_lab import finish, mcastio_cmd

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    """A host with three links and a peer behind each, shared by this module."""
    yield from module_lab(links=3)


def test_send_with_a_rate_and_no_count_sends_until_interrupted(lab: Lab) -> None:
    """Friction 4: it sent once and exited, silently."""
    link = lab.link[1]
    listener = lab.peer_listen(link, "239.255.20.1", 44001)
    proc = lab.popen(
        lab.host, *mcastio_cmd("send", "239.255.20.1:44001", "hi", "-i", "eth1", "--rate", "50"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    first = proc.stdout.readline()  # running: the first round is out
    assert first.split()[:2] == [b"#1", b"eth1"], first
    time.sleep(0.5)  # ~25 rounds at 50/s; the old code had exited after one
    assert proc.poll() is None, "send stopped by itself"
    proc.send_signal(signal.SIGINT)
    code, out, err = finish(proc)
    assert code == 0, err
    summary = out.splitlines()[-2]
    rounds = int(summary.split(" in ")[1].split()[0])
    assert rounds >= 5
    assert listener.stop().count(b"hi") >= 5


def test_send_lines_sends_one_datagram_per_line_of_stdin(lab: Lab) -> None:
    link = lab.link[2]
    listener = lab.peer_listen(link, "239.255.20.2", 44002)
    proc = lab.popen(
        lab.host, *mcastio_cmd("send", "-i", "eth2", "239.255.20.2:44002", "--lines", "-q"),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdin is not None
    proc.stdin.write(b"first line\n")
    proc.stdin.flush()
    listener.wait_for(b"first line", timeout=10)  # sent as typed, before stdin ends
    out, err = proc.communicate(b"second\r\n\nthird", timeout=15)
    assert proc.returncode == 0, err
    assert "in 4 rounds" in out.decode()
    # Datagrams are the lines without their endings (the empty one adds nothing).
    listener.wait_for(b"first line" + b"second" + b"" + b"third", timeout=10)
    listener.stop()


_PEER_SEND = r"""
import socket, sys
addr, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(addr))
for target in sys.argv[3:]:
    group, _, payload = target.partition("=")
    s.sendto(bytes.fromhex(payload), (group.rpartition(":")[0], int(group.rpartition(":")[2])))
"""


def peer_send(lab: Lab, n: int, *datagrams: tuple[str, bytes]) -> None:
    """Send each (GROUP:PORT, payload) from link ``n``'s peer, in order."""
    link = lab.link[n]
    lab.run(link.peer_ns, sys.executable, "-c", _PEER_SEND, link.peer_addr, "0",
            *(f"{target}={data.hex()}" for target, data in datagrams))  # fmt: skip


def listen(lab: Lab, *args: str) -> subprocess.Popen[bytes]:
    return lab.popen(
        lab.host, *mcastio_cmd("listen", *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def pcapng_interfaces(data: bytes) -> tuple[list[str], list[int]]:
    """The interface names of a pcapng file's IDBs, and each packet's interface id."""
    names, ids, offset = [], [], 0
    while offset < len(data):
        block_type, length = struct.unpack_from("<II", data, offset)
        if block_type == 1:
            opt = offset + 16
            while True:
                code, size = struct.unpack_from("<HH", data, opt)
                if code == 0:
                    break
                if code == 2:
                    names.append(data[opt + 4 : opt + 4 + size].decode())
                opt += 4 + size + (-size % 4)
        elif block_type == 6:
            ids.append(struct.unpack_from("<I", data, offset + 8)[0])
        offset += length
    return names, ids


def test_listen_shows_the_port_the_whole_payload_and_a_summary_per_group(
    lab: Lab, tmp_path: Path
) -> None:
    """Frictions 2 and 7: a 9-character preview, no port, groups lumped together."""
    text = ("line one of a long payload " * 4 + "\nline two").encode()
    pcap = tmp_path / "listen.pcapng"
    proc = listen(lab, "239.255.20.3:44003", "-i", "eth1", "239.255.20.4:44004", "-A",
                  "-c", "2", "--pcap", str(pcap))  # fmt: skip
    for group in ("239.255.20.3", "239.255.20.4"):
        lab.wait_for_membership(lab.host, "eth1", group, proc)
    peer_send(lab, 1, ("239.255.20.3:44003", text), ("239.255.20.4:44004", b"short"))
    code, out, err = finish(proc)
    assert code == 0, err
    assert all(len(line) <= 80 for line in out.splitlines()), out
    lines = out.splitlines()
    [first] = [ln for ln in lines if " 239.255.20.3:44003 " in ln and ln[:1].isdigit()]
    assert first.split()[1:3] == ["eth1", f"{lab.link[1].peer_addr}:" + first.split()[2][-5:]]
    # The whole payload follows, indented, its own line break kept.
    body = lines[lines.index(first) + 1 : lines.index(first) + 4]
    assert "".join(ln[4:] for ln in body[:2]) == text.decode().splitlines()[0]
    assert body[2] == "    line two"
    assert any(" 239.255.20.4:44004 " in ln and ln.endswith("short") for ln in lines)
    summary = out[out.index("summary for") :]
    assert re.search(r"239\.255\.20\.3:44003 +1 datagram +117 bytes", summary), summary
    assert re.search(r"239\.255\.20\.4:44004 +1 datagram +5 bytes", summary), summary
    # The pcap: tcpdump reads it, and each packet names its interface.
    dump = read_capture(str(pcap))
    assert f"{lab.link[1].peer_addr}." in dump
    assert "> 239.255.20.3.44003: UDP, length 117" in dump
    assert "> 239.255.20.4.44004: UDP, length 5" in dump
    assert pcapng_interfaces(pcap.read_bytes()) == (["eth1"], [0, 0])


def test_listen_raw_writes_only_the_payloads_and_joins_a_range(lab: Lab) -> None:
    proc = listen(lab, "--raw", "239.255.20.10-12:44005", "-c", "3", "-i", "eth2")
    lab.wait_for_membership(lab.host, "eth2", "239.255.20.12", proc)
    peer_send(lab, 2, ("239.255.20.10:44005", b"\x00\x01"), ("239.255.20.11:44005", b"two\n"),
              ("239.255.20.12:44005", b"\xff"))  # fmt: skip
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert out == b"\x00\x01two\n\xff"
    assert "summary for 239.255.20.10-12:44005" in err.decode()


def test_ping_with_no_peer_says_so_once_and_exits_1(lab: Lab) -> None:
    """Friction 6: it printed 'all answered: 0 peers' and still exited 1."""
    argv = ["ping", "239.255.20.5:44006", "-i", "eth1", "-c", "1", "--interval", "0.1"]
    proc = lab.run(lab.host, *mcastio_cmd(*argv, "--wait", "0"), check=False)
    assert proc.returncode == 1
    assert "all answered" not in proc.stdout
    assert (
        proc.stderr == "mcastio: no peer answered: is 'mcastio ping' running on the other hosts?\n"
    )


def _ping_pair(
    lab: Lab, host_args: list[str], peer_args: list[str], codes: tuple[int, int] = (0, 0)
) -> tuple[str, str]:
    common = ["-i", "eth1", "-c", "3", "--interval", "0.2", "--wait", "1", "--json"]
    link = lab.link[1]
    host = lab.popen(lab.host, *mcastio_cmd("ping", *host_args, *common),
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    peer = lab.popen(link.peer_ns, *mcastio_cmd("ping", *peer_args, *common[2:]),
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    (hcode, hout, herr), (pcode, _pout, perr) = (finish(p, timeout=20) for p in (host, peer))
    assert (hcode, pcode) == codes, (herr, perr)
    return hout, herr


def test_ping_both_families_in_one_run(lab: Lab) -> None:
    link = lab.link[1]
    v4, v6 = "239.255.20.6:44007", "[ff12::20:6]:44007"
    out, err = _ping_pair(lab, [v4, v6, link.peer_addr], [v6, v4, link.host_addr])
    assert f"pinging {v4} on eth1" in err
    assert f"pinging {v6} on eth1" in err
    rows = json.loads(out)["results"]
    kinds = {(":" in str(r["peer"]), r["kind"]) for r in rows if r["received"] == r["sent"] == 3}
    assert kinds == {
        (False, "unicast"),
        (False, "multicast"),
        (True, "unicast"),
        (True, "multicast"),
    }


def test_ping_ssm_joins_each_named_peer_as_a_source(lab: Lab) -> None:
    """--ssm joins (PEER, GROUP): the named peer is heard, and only a named one."""
    link, group = lab.link[1], "232.1.20.7:44008"
    out, _err = _ping_pair(lab, [group, link.peer_addr, "--ssm"], [group, link.host_addr, "--ssm"])
    rows = {r["kind"]: r for r in json.loads(out)["results"]}
    assert (rows["multicast"]["sent"], rows["multicast"]["received"]) == (3, 3)
    # Naming someone else as the source: the peer's multicast answers are filtered
    # out by the kernel (an any-source join would let them in); unicast still works.
    # Neither side hears the other's multicast now, so both exit 1.
    out, _err = _ping_pair(
        lab, [group, "10.200.1.99", "--ssm"], [group, link.host_addr, "--ssm"], codes=(1, 1)
    )
    rows = {r["kind"]: r for r in json.loads(out)["results"] if r["peer"] == link.peer_addr}
    assert rows["unicast"]["received"] == rows["unicast"]["sent"] == 3
    assert (rows["multicast"]["sent"], rows["multicast"]["received"]) == (3, 0)
