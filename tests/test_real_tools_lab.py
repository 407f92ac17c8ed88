"""mcastio against receivers and senders that are not ours: mcfirst, iperf, multicast-expert.

Each peer of the lab runs the real tool on its own link; the host runs mcastio.
Passing here means the datagrams are right on the wire, not only to our own code.
"""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import sys

import pytest

import mcastio
from mcastio.testing import Lab
from mcastio.testing._support import find_tool
from tests.conftest import require, run

pytestmark = pytest.mark.lab

SSM_GROUP = "232.1.44.1"
GROUP = "239.255.44.1"
PORT = 5744


def _need(tool: str, package: str) -> None:
    require(None if find_tool(tool) else f"{tool} is not installed (Debian package {package})")


def _endpoint(group: str, **kwargs: object) -> mcastio.MulticastEndpoint:
    return mcastio.MulticastEndpoint(group, PORT, watch=False, keepalive=False, **kwargs)  # type: ignore[arg-type]


def test_mcfirst_source_specific_receivers_get_each_copy_from_their_own_link(lab: Lab) -> None:
    """An (S,G) receiver accepts only its link's host address as S: one wrong source
    address, or a copy out of the wrong interface, and mcfirst gets nothing."""
    _need("mcfirst", "ssmping")
    receivers = []
    for link in lab.link:
        argv = ["mcfirst", "-4", "-c", "2", "-t", "10", "-I", link.peer_if]
        argv += [link.host_addr, SSM_GROUP, str(PORT)]
        receivers.append(
            lab.popen(link.peer_ns, *argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        )
    for link, proc in zip(lab.link, receivers, strict=True):
        lab.wait_for_membership(link.peer_ns, link.peer_if, SSM_GROUP, proc)

    async def main() -> None:
        async with _endpoint(SSM_GROUP, sources=[link.peer_addr for link in lab.link]) as ep:
            for _ in range(2):
                results = await ep.send_all(b"ssm-copy")
                assert all(r.ok for r in results), results
                await asyncio.sleep(0.1)

    with lab.inside():
        run(main())
    for link, proc in zip(lab.link, receivers, strict=True):
        out, _ = proc.communicate(timeout=15)
        text = out.decode()
        assert proc.returncode == 0, text
        assert text.count(f"Received 8 bytes from {link.host_addr}") == 2, text


def test_iperf_floods_are_received_whole_and_attributed_per_link(lab: Lab) -> None:
    _need("iperf", "iperf")

    async def main() -> tuple[dict[str, int], dict[str, int], set[tuple[str, str]]]:
        async with _endpoint(GROUP) as ep:
            sub = ep.subscribe(queue_size=20_000)
            sent: dict[str, int] = {}
            for link in lab.link:
                argv = ["iperf", "-u", "-c", GROUP, "-p", str(PORT), "-T", "1", "-l", "100"]
                argv += ["-b", "2000pps", "-t", "1"]
                out = await asyncio.to_thread(lab.run, link.peer_ns, *argv, timeout=30)
                sent[link.host_if] = int(out.stdout.rsplit("Sent ", 1)[1].split()[0])
            await asyncio.sleep(0.3)
            counts: dict[str, int] = {}
            pairs: set[tuple[str, str]] = set()
            for dgram in await sub.get_batch():
                counts[dgram.interface] = counts.get(dgram.interface, 0) + 1
                pairs.add((dgram.interface, dgram.source[0]))
        return sent, counts, pairs

    with lab.inside():
        sent, counts, pairs = run(main())
    # Every datagram is attributed to the link its sender sits behind.
    assert pairs == {(link.host_if, link.peer_addr) for link in lab.link}
    for link in lab.link:
        # iperf2 counts its end-of-test datagrams its own way: allow a few either side.
        assert abs(counts[link.host_if] - sent[link.host_if]) <= 5, (counts, sent)


_RX = """
import socket, sys, multicast_expert as me
group, port, iface = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with me.McastRxSocket(socket.AF_INET, [group], port, iface=iface, timeout=10) as s:
    print("ready", flush=True)
    data, addr = s.recvfrom()
    print(data.decode(), addr[0], flush=True)
"""

_TX = """
import socket, sys, multicast_expert as me
group, port, iface, text = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
with me.McastTxSocket(socket.AF_INET, [group], iface=iface) as s:
    s.sendto(text.encode(), (group, port))
"""


def test_multicast_expert_hears_send_all_and_is_heard_on_every_link(lab: Lab) -> None:
    require(
        None
        if importlib.util.find_spec("multicast_expert")
        else "multicast-expert is not installed (pip install -e '.[test]')"
    )
    receivers = []
    for link in lab.link:
        argv = [sys.executable, "-c", _RX, GROUP, str(PORT), link.peer_if]
        proc = lab.popen(link.peer_ns, *argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n", proc.stderr.read() if proc.stderr else b""
        receivers.append(proc)

    async def main() -> dict[str, tuple[str, str]]:
        async with _endpoint(GROUP) as ep:
            sub = ep.subscribe()
            await ep.send_all(b"from-mcastio")
            for link in lab.link:
                argv = [sys.executable, "-c", _TX, GROUP, str(PORT), link.peer_if]
                await asyncio.to_thread(lab.run, link.peer_ns, *argv, f"from-{link.peer_if}")
            got = await asyncio.wait_for(_take(sub, len(lab.link)), 5)
        return {d.interface: (d.data.decode(), d.source[0]) for d in got}

    with lab.inside():
        heard = run(main())
    assert heard == {link.host_if: (f"from-{link.peer_if}", link.peer_addr) for link in lab.link}
    for link, proc in zip(lab.link, receivers, strict=True):
        out, err = proc.communicate(timeout=15)
        assert proc.returncode == 0, err.decode()
        # One copy per link, each from that link's own host address.
        assert out.decode().split() == ["from-mcastio", link.host_addr]


async def _take(sub: mcastio.Subscription, count: int) -> list[mcastio.Datagram]:
    got: list[mcastio.Datagram] = []
    async for dgram in sub:
        got.append(dgram)
        if len(got) == count:
            break
    return got
