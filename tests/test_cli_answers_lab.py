"""Two CLI answers from issue 23: doctor reports what it saw when stopped early, and a
payload no UDP datagram can carry is a usage error (exit 2), not a failure (1)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

import mcastio
from mcastio.testing import Lab

pytestmark = pytest.mark.lab

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(mcastio.__file__)))


def _mcastio(*args: str) -> list[str]:
    path = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
    return ["env", f"PYTHONPATH={path}", sys.executable, "-m", "mcastio", *args]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_doctor_stopped_early_prints_its_findings(lab: Lab, sig: signal.Signals) -> None:
    proc = lab.popen(
        lab.host, *_mcastio("doctor", "--duration", "30"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    assert b"watching the host" in proc.stdout.readline()
    time.sleep(0.5)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=10)
    print(f"doctor after {sig.name}: exit {proc.returncode}, {len(out.splitlines())} lines")
    assert proc.returncode in (0, 1), err
    # The summary line and the window it really watched.
    assert b"warning" in out.splitlines()[-1], out
    assert b"in 30 s" not in out, "the findings must name the window actually watched"


def test_send_of_a_payload_too_big_for_udp_is_a_usage_error(lab: Lab, tmp_path: object) -> None:
    big = os.path.join(str(tmp_path), "big.bin")
    with open(big, "wb") as f:
        f.write(bytes(70_000))
    proc = lab.run(lab.host, *_mcastio("send", "239.255.23.12:42312", "--file", big), check=False)
    assert proc.returncode == 2, proc.stderr
    assert "holds at most 65507" in " ".join(proc.stderr.split())
