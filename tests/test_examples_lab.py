"""The request/reply examples run as documented, in their own namespace lab."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mcastio.testing import lab_support
from mcastio.testing.responders import responder_support
from tests.conftest import require

pytestmark = pytest.mark.lab

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(*argv: str) -> list[list[str]]:
    require(lab_support())
    require(responder_support())
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / argv[0]), *argv[1:]],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert all(len(line) <= 80 for line in proc.stdout.splitlines()), proc.stdout
    # Indented lines belong to the row above them (ssdp_search's SERVER, LOCATION).
    return [line.split() for line in proc.stdout.splitlines() if not line.startswith(" ")]


def test_mdns_browse_in_a_lab_hears_avahi_and_zeroconf() -> None:
    rows = run_example("mdns_browse.py", "--lab", "--timeout", "1")
    # interface, how, source, type, name, "->", value
    seen = {(r[0], r[1], r[3], r[4]) for r in rows}
    assert ("eth0", "reply", "A", "peer0.local") in seen  # avahi-daemon behind eth0
    assert ("eth1", "reply", "A", "peer1.local") in seen  # python-zeroconf behind eth1
    assert ("eth1", "reply", "PTR", "_services._dns-sd._udp.local") in seen
    assert not any(r[4] == "peer1.local" and r[0] != "eth1" for r in rows)


def test_ssdp_search_in_a_lab_hears_minidlna_on_both_links() -> None:
    rows = run_example("ssdp_search.py", "--lab", "upnp:rootdevice")
    assert sorted((r[0], r[1], r[2]) for r in rows) == [
        ("eth0", "10.200.0.2", "upnp:rootdevice"),
        ("eth1", "10.200.1.2", "upnp:rootdevice"),
    ]
