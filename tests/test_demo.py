"""``mcastio demo`` on a real namespace lab, and its loopback fallback."""

from __future__ import annotations

import re

import pytest

from mcastio._cli import demo as _demo
from mcastio._cli import main
from mcastio.testing import Lab

pytestmark = pytest.mark.lab


def test_demo_contrasts_naive_sockets_with_mcastio(
    lab: Lab, capsys: pytest.CaptureFixture[str]
) -> None:
    del lab  # Only to require lab support; the demo builds its own.
    assert main(["demo", "--links", "3"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"receive on eth1\s+LOST\s+yes 10\.200\.1\.2", out), out
    assert re.search(r"send reaches eth2\s+LOST\s+yes", out), out
    assert re.search(r"receive on eth0\s+yes\s+yes", out), out
    assert "naive sockets lost 4 of 6 paths; mcastio lost 0." in out
    assert all(len(line) <= 80 for line in out.splitlines())


def test_demo_rejects_silly_link_counts(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--links", "40"]) == 2
    assert "between 2 and 8" in capsys.readouterr().err


def test_loopback_fallback_sends_and_hears_itself(
    lab: Lab, capsys: pytest.CaptureFixture[str]
) -> None:
    with lab.inside():
        assert _demo._loopback_demo() == 0
    out = capsys.readouterr().out
    for link in lab.link:
        assert f"send on {link.host_if}" in out
        assert re.search(rf"received on {link.host_if}\s+from {re.escape(link.host_addr)}", out)
