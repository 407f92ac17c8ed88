"""examples/ssdp_responder.py, found by async-upnp-client's ``upnp-client search`` on every link.

The responder runs in the host of a three-link lab; from each peer the real
client searches over IPv4 and over IPv6 (ff02::c), all at once. Each must get
exactly one answer, from port 1900 and the address of its own link, whose
LOCATION names that same address. What came back is printed (``pytest -s``).
"""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mcastio.testing import Lab, Link, lab_support
from tests.conftest import require, wait_ready_line

pytestmark = pytest.mark.lab

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "ssdp_responder.py"
UUID = "6d636173-7469-6f00-0000-00000000abcd"


def test_upnp_client_finds_the_responder_on_each_link_at_its_own_address() -> None:
    require(lab_support())
    if importlib.util.find_spec("async_upnp_client") is None:
        require("async-upnp-client is not installed (the test extra installs it)")
    with Lab(links=3) as lab:
        responder = lab.popen(
            lab.host,
            sys.executable,
            str(EXAMPLE),
            "--uuid",
            UUID,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            assert "ready" in wait_ready_line(responder)
            host_ll = {
                link.host_if: lab.run(
                    lab.host, "ip", "-6", "-o", "addr", "show", "dev", link.host_if, "scope", "link"
                )
                .stdout.split()[3]
                .split("/")[0]
                for link in lab.link
            }

            def search(job: tuple[Link, int]) -> list[dict[str, str]]:
                link, family = job
                # --timeout: how long it listens (default 4 s); the example waits <= 1 s.
                argv = [sys.executable, "-m", "async_upnp_client.cli", "--timeout", "2", "search"]
                argv += ["--search_target", "upnp:rootdevice"]
                if family == 6:
                    index = lab.run(link.peer_ns, "cat", f"/sys/class/net/{link.peer_if}/ifindex")
                    argv += ["--target", f"ff02::c%{index.stdout.strip()}"]
                else:
                    argv += ["--bind", link.peer_addr]
                out = lab.run(link.peer_ns, *argv, timeout=30).stdout
                return [json.loads(line) for line in out.splitlines() if line.startswith("{")]

            jobs = [(link, family) for link in lab.link for family in (4, 6)]
            with ThreadPoolExecutor(len(jobs)) as pool:
                found = list(pool.map(search, jobs))
        finally:
            responder.terminate()
            assert responder.wait(10) == 0
            assert responder.stdout is not None
            responder.stdout.close()
    print("\nupnp-client search:")
    for (link, family), answers in zip(jobs, found, strict=True):
        print(
            f"  {link.peer_if} IPv{family}: {[(a['_remote_addr'], a['LOCATION']) for a in answers]}"
        )
        assert len(answers) == 1, answers
        (answer,) = answers
        assert answer["USN"] == f"uuid:{UUID}::upnp:rootdevice"
        assert answer["_port"] == "1900"
        own = link.host_addr if family == 4 else host_ll[link.host_if]
        remote = answer["_remote_addr"].strip("()").replace("'", "").split(", ")[0]
        assert ipaddress.ip_address(remote) == ipaddress.ip_address(own)
        host = f"[{own}]" if family == 6 else own
        assert answer["_location_original"] == f"http://{host}:8080/description.xml"


def test_the_lab_mode_of_the_example_answers_each_peer() -> None:
    require(lab_support())
    argv = [sys.executable, str(EXAMPLE), "--lab"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[1:] == [
        f"veth{n}: LOCATION: http://10.200.{n}.1:8080/description.xml (from 10.200.{n}.1:1900)"
        for n in (0, 1)
    ]
