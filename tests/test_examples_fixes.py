"""Friction 10 of issue 20: the examples' rough edges, each checked."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mcastio.testing import Lab
from tests.conftest import module_lab

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))

import mdns_browse  # noqa: E402
import ssdp_search  # noqa: E402


def _answer(rtype: int, rdata: bytes) -> bytes:
    header = bytes.fromhex("0000 8400 0000 0001 0000 0000")
    name = b"\x04host\x05local\x00"
    return (
        header
        + name
        + rtype.to_bytes(2, "big")
        + b"\x00\x01"
        + bytes(4)
        + (len(rdata).to_bytes(2, "big") + rdata)
    )


def test_mdns_srv_records_show_their_port_and_txt_records_their_text() -> None:
    srv = (0).to_bytes(2, "big") + (5).to_bytes(2, "big") + (8080).to_bytes(2, "big")
    [record] = mdns_browse.parse_answers(_answer(33, srv + b"\x04peer\x05local\x00")) or []
    assert record.value == "peer.local:8080 (priority 0, weight 5)"
    [record] = mdns_browse.parse_answers(_answer(16, b"\x06path=/\x03v=1")) or []
    assert record.value == "'path=/' 'v=1'"
    [record] = mdns_browse.parse_answers(_answer(16, b"\x00")) or []
    assert record.value == "(empty)"


def test_ssdp_lines_fit_80_columns() -> None:
    headers = {
        "ST": "urn:schemas-upnp-org:device:MediaServer:1",
        "SERVER": "Debian DLNADOC/1.50 UPnP/1.0 MiniDLNA/1.3.3 plus a long vendor suffix",
        "LOCATION": "http://10.200.0.2:8200/rootDesc.xml?with=a&rather=long&query=string",
    }
    found = [ssdp_search.Response("eth0", "10.200.0.2", headers)]
    lines = ssdp_search.report(found)
    assert all(len(line) <= 80 for line in lines), lines
    assert lines[0].split() == ["eth0", "10.200.0.2", headers["ST"]]
    assert "".join(lines).replace(" ", "").count("rootDesc.xml") == 1


def test_mdns_browse_lab_without_zeroconf_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    fake = tmp_path / "zeroconf"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('no zeroconf here')\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "mdns_browse.py"), "--lab"],
        capture_output=True, text=True, env=env, timeout=30, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("mdns_browse: --lab cannot run here: ")
    assert "zeroconf" in proc.stderr
    assert len(proc.stderr.splitlines()) == 1


def test_no_docs_page_has_a_section_twice() -> None:
    """docs/cli.md had its '## querier' section twice."""
    for page in (ROOT / "docs").rglob("*.md"):
        headings = re.findall(r"^#+ .*$", page.read_text(), re.M)
        twice = {h for h in headings if headings.count(h) > 1}
        assert not twice, f"{page.name}: {twice}"


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    yield from module_lab(links=1)


@pytest.mark.lab
def test_protocol_example_runs_until_ctrl_c_as_it_says(lab: Lab) -> None:
    """It said "Ctrl-C quits" but quit by itself after its pings."""
    listener = lab.peer_listen(lab.link[0], "239.255.8.9", 45009)
    proc = lab.popen(
        lab.host, "env", f"PYTHONPATH={ROOT}", sys.executable,
        str(ROOT / "examples" / "protocol.py"), "239.255.8.9", "45009", "--count", "1",
        "--interval", "0.05", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    listener.wait_for(b"ping", timeout=10)  # it runs: its one ping is out
    listener.stop()
    time.sleep(1.0)  # the old example quit 0.05 s after its ping
    assert proc.poll() is None, "it quit by itself"
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert b"Traceback" not in err
