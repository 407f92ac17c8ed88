"""``mcastio demo`` on a real namespace lab, and what it does without one."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

import mcastio
from mcastio._cli import main
from mcastio.testing import Lab
from mcastio.testing._support import find_tool
from tests.conftest import as_plain_user, skip_or_fail

pytestmark = pytest.mark.lab

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(mcastio.__file__)))


def test_demo_contrasts_naive_sockets_with_mcastio(
    lab: Lab, capsys: pytest.CaptureFixture[str]
) -> None:
    del lab  # Only to require lab support; the demo builds its own.
    assert main(["demo", "--links", "3"]) == 0
    out = capsys.readouterr().out
    assert "joined with INADDR_ANY" in out
    assert "plain sendto()" in out
    assert re.search(r"PATH\s+NAIVE SOCKET\s+MCASTIO\s+MCASTIO HEARD FROM", out), out
    assert re.search(r"receive on eth1\s+LOST\s+yes\s+10\.200\.1\.2", out), out
    assert re.search(r"send reaches eth2\s+LOST\s+yes", out), out
    assert re.search(r"receive on eth0\s+yes\s+yes", out), out
    assert re.search(r"other group 239\.255\.77\.78\s+LEAKS IN\s+kept out", out), out
    assert "naive sockets lost 4 of 6 paths and let in 1 datagram for another group;" in out
    assert "mcastio lost 0 and let in 0." in out
    assert "docs/index.md#background" in out
    assert all(len(line) <= 80 for line in out.splitlines())


def test_demo_rejects_silly_link_counts(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--links", "40"]) == 2
    assert "between 2 and 8" in capsys.readouterr().err


def _count_egress(lab: Lab) -> None:
    """Count IPv4/IPv6 UDP and IGMP leaving each of the host's links."""
    lab.run(lab.host, "nft", "add", "table", "netdev", "demo")
    for link in lab.link:
        chain = f"out_{link.host_if}"
        hook = f"{{ type filter hook egress device {link.host_if} priority 0 ; }}"
        lab.run(lab.host, "nft", "add", "chain", "netdev", "demo", chain, hook)
        for match in ("ip protocol udp", "ip protocol igmp", "ip6 nexthdr udp"):
            lab.run(
                lab.host, "nft", "add", "rule", "netdev", "demo", chain, *match.split(), "counter"
            )


def _egress_packets(lab: Lab, what: str = "") -> dict[str, int]:
    """Packets counted per link, by the rules whose match contains ``what``."""
    out = lab.run(lab.host, "nft", "list", "table", "netdev", "demo").stdout
    counts: dict[str, int] = {}
    for chain in out.split("chain ")[1:]:
        name = chain.split()[0].removeprefix("out_")
        rules = re.findall(r"\n\s*(.*?) counter packets (\d+)", chain)
        counts[name] = sum(int(n) for match, n in rules if what in match)
    return counts


def test_without_namespace_rights_the_demo_explains_and_sends_nothing(lab: Lab) -> None:
    if find_tool("nft") is None:
        skip_or_fail("nft (nftables) is needed to count what leaves the links")
    _count_egress(lab)
    # An unmapped user namespace: not root, and no 'unshare -rnm' either. The
    # network namespace is still the lab host's, with its three real links.
    proc = lab.run(
        lab.host, "unshare", "--user", "env", f"PYTHONPATH={ROOT}", "PATH=/usr/bin:/bin",
        sys.executable, "-m", "mcastio", "demo", check=False,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    out = proc.stderr
    assert out.startswith("mcastio: demo: cannot build the namespace lab here:")
    assert "needs root or a user namespace" in out
    assert "'unshare -rnm' failed" in out
    assert "never on your" in out
    assert "sudo mcastio demo" in out
    assert "docs/index.md#background" in out
    assert all(len(line) <= 80 for line in out.splitlines())
    assert _egress_packets(lab) == {"eth0": 0, "eth1": 0, "eth2": 0}
    # The counters do count: the same process sending for real is seen.
    sent = lab.run(
        lab.host, "unshare", "--user", "env", f"PYTHONPATH={ROOT}", sys.executable, "-m",
        "mcastio", "send", "239.255.77.77:45077", "x", check=False,
    )  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    assert _egress_packets(lab, "ip protocol udp") == {"eth0": 1, "eth1": 1, "eth2": 1}


def test_a_plain_user_gets_the_lab_through_unshare(lab: Lab) -> None:
    del lab
    # A plain user, a login PATH without sbin, the host's network namespace.
    proc = subprocess.run(
        as_plain_user("-m", "mcastio", "demo"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "mcastio lost 0 and let in 0." in proc.stdout
