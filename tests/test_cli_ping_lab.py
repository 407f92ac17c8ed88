"""``mcastio ping`` between three instances, with one link's multicast blocked."""

from __future__ import annotations

import ipaddress
import json
import subprocess

import pytest

from mcastio.testing import Lab, Link
from tests.test_cli_lab import finish, mcastio_cmd

pytestmark = pytest.mark.lab

# --wait covers the start-up skew of the three processes on a loaded machine.
PING = ("--count", "5", "--interval", "0.2", "--wait", "1.5")


def block_multicast(lab: Lab, link: Link, port: int, v6: bool) -> None:
    """nft on the peer's side of ``link``: drop multicast to ``port`` both ways."""
    match = "ip6 daddr ff00::/8" if v6 else "ip daddr 224.0.0.0/4"
    lab.run(link.peer_ns, "nft", "add", "table", "netdev", "block")
    for hook in ("ingress", "egress"):
        spec = f"{{ type filter hook {hook} device {link.peer_if} priority 0 ; }}"
        lab.run(link.peer_ns, "nft", "add", "chain", "netdev", "block", hook, spec)
        lab.run(link.peer_ns, "nft", "add", "rule", "netdev", "block", hook,
                *match.split(), "udp", "dport", str(port), "drop")  # fmt: skip


def rows(out: str) -> dict[tuple[str, str, str], tuple[int, int, float | None]]:
    results = json.loads(out)["results"]
    return {
        (r["peer"], r["interface"], r["kind"]): (r["sent"], r["received"], r["loss_percent"])
        for r in results
    }


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_ping_three_peers_shows_the_blocked_link_only(lab: Lab, v6: bool) -> None:
    port = 44001 + v6
    target = f"[ff12::7:{port - 44000}]:{port}" if v6 else f"239.255.7.1:{port}"
    l0, l1 = lab.link[0], lab.link[1]

    def addr(link: Link, side: str) -> str:
        value = getattr(link, f"{side}_addr6" if v6 else f"{side}_addr")
        assert isinstance(value, str)
        return str(ipaddress.ip_address(value))  # as ping prints it

    block_multicast(lab, l1, port, v6)
    # The host's third link has no ping peer: leave it out.
    host = lab.popen(
        lab.host, *mcastio_cmd("ping", target, addr(l0, "peer"), addr(l1, "peer"), "-i", "eth0",
                               "-i", "eth1", "--json", *PING),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    peers = [
        lab.popen(link.peer_ns, *mcastio_cmd("ping", target, addr(link, "host"), "--json", *PING),
                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for link in (l0, l1)
    ]  # fmt: skip
    (hcode, hout, herr), (c0, out0, err0), (c1, out1, err1) = (
        finish(p, timeout=20) for p in (host, *peers)
    )
    assert f"pinging {target} on eth0, eth1" in herr
    at_host, at_p0, at_p1 = rows(hout), rows(out0), rows(out1)
    p0, p1, h0, h1 = addr(l0, "peer"), addr(l1, "peer"), addr(l0, "host"), addr(l1, "host")
    # Friction 6: SENT showed 4 for -c 5. Probes count from the first one after a
    # peer was heard, and probing goes on until each peer has had its 5.
    for table in (at_host, at_p0, at_p1):
        assert all(sent == 5 for sent, _r, _l in table.values()), table
    loss = {key: lost for key, (_s, _r, lost) in at_host.items()}
    assert loss == {
        (p0, "eth0", "unicast"): 0,
        (p0, "eth0", "multicast"): 0,
        (p1, "eth1", "unicast"): 0,
        (p1, "eth1", "multicast"): 100,
    }
    assert {k: lost for k, (_s, _r, lost) in at_p0.items()} == {
        (h0, l0.peer_if, "unicast"): 0,
        (h0, l0.peer_if, "multicast"): 0,
    }
    assert {k: lost for k, (_s, _r, lost) in at_p1.items()} == {
        (h1, l1.peer_if, "unicast"): 0,
        (h1, l1.peer_if, "multicast"): 100,
    }
    assert (hcode, c0, c1) == (1, 0, 1), (herr, err0, err1)


def test_ping_table_for_people(lab: Lab) -> None:
    l0, l1 = lab.link[0], lab.link[1]
    block_multicast(lab, l1, 44003, v6=False)
    host = lab.popen(
        lab.host, *mcastio_cmd("ping", "239.255.7.3:44003", l0.peer_addr, l1.peer_addr,
                               "-i", "eth0", "-i", "eth1", *PING),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    peers = [
        lab.popen(link.peer_ns, *mcastio_cmd("ping", "239.255.7.3:44003", *PING),
                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for link in (l0, l1)
    ]  # fmt: skip
    code, out, err = finish(host, timeout=20)
    for peer in peers:
        finish(peer, timeout=20)
    assert code == 1, err
    lines = out.splitlines()
    assert lines[0] == "pinging 239.255.7.3:44003 on eth0, eth1"
    # Friction 6: a line per answer as it arrives (as omping), then the table.
    head = next(n for n, line in enumerate(lines) if line.startswith("PEER"))
    answers = [line.split() for line in lines[1:head]]
    assert answers, out
    assert {(a[0], a[1], a[2]) for a in answers} == {
        (l0.peer_addr, "eth0", "unicast"),
        (l0.peer_addr, "eth0", "multicast"),
        (l1.peer_addr, "eth1", "unicast"),
    }
    assert all(a[3].startswith("seq=") and a[4].startswith("time=") for a in answers)
    lines = [lines[0], *lines[head:]]
    assert lines[1].split() == ["PEER", "/", "INTERFACE", "KIND", "SENT", "RECV", "LOSS", "DUP",
                                "RTT", "MIN/AVG/MAX", "ms"]  # fmt: skip
    assert lines[2] == l0.peer_addr
    assert lines[3].split()[:2] == ["eth0", "unicast"]
    assert lines[4].split()[:2] == ["eth0", "multicast"]
    assert lines[4].split()[4:6] == ["0%", "0"]
    assert lines[5] == l1.peer_addr
    assert lines[7].split()[:2] == ["eth1", "multicast"]
    assert lines[7].split()[3:] == ["0", "100%", "0", "-"]
    assert lines[-1] == f"NO ANSWER: multicast to {l1.peer_addr} on eth1"
    assert all(len(line) <= 80 for line in lines)
