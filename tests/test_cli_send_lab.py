"""``mcastio send`` on a real kernel: payload sources, pacing, JSON, the seq header."""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from mcastio._cli.seqheader import HEADER_SIZE, decode_header
from mcastio.testing import Lab
from tests.test_cli_lab import finish, mcastio_cmd

pytestmark = pytest.mark.lab


def test_payload_from_stdin_file_hex_and_size(lab: Lab, tmp_path: Path) -> None:
    link = lab.link[1]
    listener = lab.peer_listen(link, "239.255.6.1", 43001)
    path = tmp_path / "payload"
    path.write_bytes(b"from a file\n")
    target = ("239.255.6.1:43001", "--interface", "eth1")
    piped = lab.popen(
        lab.host, *mcastio_cmd("send", *target, "--file", "-"),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    out, _ = piped.communicate(b"from stdin\n", timeout=15)
    assert piped.returncode == 0
    assert out.decode().split()[1:] == ["eth1", "sent", "11", "bytes"]
    for extra in (["--file", str(path)], ["--hex", "68 65 78 0a"], ["--size", "5"]):
        lab.run(lab.host, *mcastio_cmd("send", *target, *extra))
    listener.wait_for(b"abcde", timeout=5)
    assert listener.lines() == [b"from stdin", b"from a file", b"hex", b"abcde"]


def test_rate_count_json_and_seq_header(lab: Lab) -> None:
    link = lab.link[2]
    listener = lab.peer_listen(link, "239.255.6.2", 43002)
    proc = lab.run(
        lab.host, *mcastio_cmd("send", "239.255.6.2:43002", "x", "-i", "eth2", "--rate", "200",
                               "--count", "5", "--json", "--seq"),
    )  # fmt: skip
    objs = [json.loads(line) for line in proc.stdout.splitlines()]
    summary = objs.pop()["summary"]
    assert [(o["round"], o["interface"], o["ok"], o["seq"]) for o in objs] == [
        (n + 1, "eth2", True, n) for n in range(5)
    ]
    assert {o["bytes"] for o in objs} == {HEADER_SIZE + 1}
    assert summary == {"rounds": 5, "bytes": 5 * (HEADER_SIZE + 1),
                       "interfaces": {"eth2": {"sent": 5, "failed": 0}}}  # fmt: skip
    time.sleep(0.2)
    data = listener.stop()
    headers = []
    while data:
        header = decode_header(data)
        assert header is not None
        headers.append(header)
        data = data[HEADER_SIZE + 1 :]
    assert [h.seq for h in headers] == [0, 1, 2, 3, 4]
    assert len({h.stream for h in headers}) == 1
    assert all(b.sent_ns - a.sent_ns > 0 for a, b in itertools.pairwise(headers))


def test_sigterm_ends_a_long_send_with_its_summary(lab: Lab) -> None:
    proc = lab.popen(
        lab.host, *mcastio_cmd("send", "239.255.6.3:43003", "x", "--count", "1000",
                               "--interval", "0.02", "-q"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    # SIGTERM once the sends have begun (a peer hears one), not after a fixed wait: a
    # Python start on a busy machine can outlast it, and the handler with it.
    listener = lab.peer_listen(lab.link[1], "239.255.6.3", 43003)
    listener.wait_for_any(timeout=20)
    listener.stop()
    proc.send_signal(signal.SIGTERM)
    code, out, err = finish(proc)
    assert code == 0, err
    first, *per_interface = out.splitlines()
    rounds = int(first.split(" in ")[1].split()[0])
    assert 1 <= rounds < 1000
    assert first == (
        f"sent {3 * rounds} datagrams ({3 * rounds} bytes) to 239.255.6.3:43003 "
        f"in {rounds} round{'s' if rounds > 1 else ''}, 0 failed"
    )
    assert [ln.split()[:2] for ln in per_interface] == [["eth0", str(rounds)],
                                                      ["eth1", str(rounds)],
                                                      ["eth2", str(rounds)]]  # fmt: skip
