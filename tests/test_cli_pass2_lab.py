"""The command line's second pass (issue 20) on a real kernel, in one shared lab."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator

import pytest

from mcastio.testing import Lab
from tests.conftest import _require_lab
from tests.test_cli_lab import finish, mcastio_cmd

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    """A host with three links and a peer behind each, shared by this module."""
    _require_lab()
    lab = Lab(links=3)
    try:
        lab.build()
        yield lab
    finally:
        lab.destroy()


def test_send_with_a_rate_and_no_count_sends_until_interrupted(lab: Lab) -> None:
    """Friction 4: it sent once and exited, silently."""
    link = lab.link[1]
    listener = lab.peer_listen(link, "239.255.20.1", 44001)
    proc = lab.popen(
        lab.host, *mcastio_cmd("send", "239.255.20.1:44001", "hi", "-i", "eth1", "--rate", "50"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    listener.wait_for(b"hi" * 5, timeout=10)
    assert proc.poll() is None, "send stopped by itself"
    proc.send_signal(signal.SIGINT)
    code, out, err = finish(proc)
    assert code == 0, err
    summary = out.splitlines()[-2]
    rounds = int(summary.split(" in ")[1].split()[0])
    assert rounds >= 5
    listener.stop()


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
    time.sleep(0.2)
    assert listener.stop() == b"first line" + b"second" + b"" + b"third"
