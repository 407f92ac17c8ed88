"""npm's SSDP and mDNS stacks as peers in the lab: node-ssdp and multicast-dns.

The programs in tests/peers/node (node-ssdp 4.0.1 and multicast-dns 7.2.5, pinned
in its package.json and package-lock.json; ``scripts/test`` runs ``npm ci`` there)
run behind every link of a three-link lab, so the proof does not rest on mcastio
and Python peers alone:

- one ``send_all`` M-SEARCH reaches a node-ssdp Server on every link, and each
  link's unicast answer comes back as a reply attributed to that link;
- node-ssdp Clients on every link search at once; mcastio hears each search on its
  own link and answers out of it, and each client prints the answer naming its link;
- one mDNS query (both families) reaches a multicast-dns responder on every link,
  answered by unicast to a query from an ephemeral port (legacy unicast) and by
  multicast to one from 5353, each answer attributed to its link.

What came back is printed (``pytest -s``) for the record.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import mcastio
from mcastio.testing import Lab, find_tool
from tests.conftest import module_lab, require, run, wait_ready_line
from tests.test_peers_lab import ask_mdns, check_attribution, every_link

NODE_DIR = Path(__file__).resolve().parent / "peers" / "node"
SSDP, SSDP_PORT = "239.255.255.250", 1900
# A search target of the tests' own, so nothing else on a link answers it.
DEVICE_ST = "urn:mcastio-test:device:NpmPeer:1"
HOST_ST = "urn:mcastio-test:device:Host:1"


def npm_peers_support() -> str | None:
    """None when node and the pinned packages are installed, else what is missing."""
    if find_tool("node") is None:
        return "node is not installed (Debian nodejs; scripts/test installs it as root)"
    pinned = json.loads((NODE_DIR / "package.json").read_text())["dependencies"]
    for name, version in pinned.items():
        manifest = NODE_DIR / "node_modules" / name / "package.json"
        if not manifest.is_file():
            return f"{name} is not installed: run 'npm ci' in {NODE_DIR} (scripts/test does)"
        installed = json.loads(manifest.read_text())["version"]
        if installed != version:
            return f"{name} {installed} is installed, {version} is pinned: run 'npm ci' there"
    return None


@pytest.fixture(scope="module")
def npm_lab() -> Iterator[Lab]:
    require(npm_peers_support())
    yield from module_lab(links=3)


@contextlib.contextmanager
def node_peers(lab: Lab, script: str, *args_per_link: list[str]) -> Iterator[list[str]]:
    """Start ``script`` behind every link (with that link's arguments), wait until each
    says it is ready, and stop them all on the way out. Yields the ready lines."""
    procs = [
        lab.popen(
            link.peer_ns,
            "node",
            str(NODE_DIR / script),
            *args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for link, args in zip(lab.link, args_per_link, strict=True)
    ]
    try:
        lines = [wait_ready_line(proc) for proc in procs]
        assert all(line.startswith("ready ") for line in lines), lines
        yield lines
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            # SIGTERM: each script closes its sockets and exits 0.
            assert proc.wait(10) == 0
            assert proc.stdout is not None
            proc.stdout.close()


def m_search(st: str) -> bytes:
    return (
        "M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\n"
        f'MAN: "ssdp:discover"\r\nMX: 1\r\nST: {st}\r\n\r\n'
    ).encode()


def headers(data: bytes) -> dict[str, str]:
    out = {}
    for line in data.decode().split("\r\n")[1:]:
        name, sep, value = line.partition(":")
        if sep:
            out[name.strip().upper()] = value.strip()
    return out


@pytest.mark.lab
def test_one_m_search_gets_every_links_node_ssdp_answer(npm_lab: Lab) -> None:
    lab = npm_lab

    async def search() -> list[mcastio.Datagram]:
        answers: list[mcastio.Datagram] = []
        async with mcastio.MulticastEndpoint(SSDP, SSDP_PORT, watch=False) as ep:
            sub = ep.subscribe()
            results = await ep.send_all(m_search(DEVICE_ST))
            assert sorted(r.interface for r in results if r.ok) == [lk.host_if for lk in lab.link]

            async def collect() -> None:
                async for dgram in sub:
                    if dgram.data.startswith(b"HTTP/1.1 200 OK"):
                        answers.append(dgram)
                        if len(answers) == len(lab.link):
                            return

            # node-ssdp answers at once (it ignores MX): the wait is for a busy machine.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(collect(), 5)
            # A second answer from any link would show up here.
            await asyncio.sleep(0.2)
            while sub.queued:
                dgram = await sub.__anext__()
                if dgram.data.startswith(b"HTTP/1.1 200 OK"):
                    answers.append(dgram)
            sub.close()
        return answers

    servers = [[lk.peer_if, DEVICE_ST] for lk in lab.link]
    with node_peers(lab, "ssdp-server.js", *servers), lab.inside():
        answers = run(search())
    rows = [(d.interface, d.source, d.is_reply, headers(d.data)["USN"]) for d in answers]
    print(f"\nnode-ssdp servers answered: {rows}")
    assert sorted(rows) == [
        (
            lk.host_if,
            (lk.peer_addr, SSDP_PORT),
            True,
            f"uuid:mcastio-npm-peer-{lk.peer_if}::{DEVICE_ST}",
        )
        for lk in lab.link
    ]
    for dgram in answers:
        link = next(lk for lk in lab.link if lk.host_if == dgram.interface)
        got = headers(dgram.data)
        assert got["ST"] == DEVICE_ST
        assert got["LOCATION"] == f"http://{link.peer_addr}:8080/{link.peer_if}.xml"


@pytest.mark.lab
def test_node_ssdp_clients_on_every_link_get_our_answer_from_their_link(npm_lab: Lab) -> None:
    lab = npm_lab
    heard: list[tuple[str, str]] = []

    def response(dgram: mcastio.Datagram) -> bytes:
        # The interface the search arrived on, as mcastio says, goes into the answer.
        return (
            "HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=60\r\nEXT:\r\n"
            f"LOCATION: http://{dgram.source[0]}/ignored\r\n"
            "SERVER: Linux/1.0 UPnP/1.1 mcastio-test/1.0\r\n"
            f"ST: {HOST_ST}\r\nUSN: uuid:mcastio-host-{dgram.interface}::{HOST_ST}\r\n\r\n"
        ).encode()

    async def serve() -> list[tuple[int, str]]:
        async with mcastio.MulticastEndpoint(
            SSDP, SSDP_PORT, source_port="group", watch=False
        ) as ep:
            sub = ep.subscribe()

            async def answer() -> None:
                async for dgram in sub:
                    got = headers(dgram.data)
                    if dgram.data.startswith(b"M-SEARCH") and got.get("ST") == HOST_ST:
                        heard.append((dgram.interface, dgram.source[0]))
                        await ep.answer(dgram, response(dgram))

            server = asyncio.ensure_future(answer())
            # Started only now: the endpoint has joined on every link.
            clients = [
                lab.popen(
                    link.peer_ns,
                    "node",
                    str(NODE_DIR / "ssdp-client.js"),
                    HOST_ST,
                    "1",
                    "5000",
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                )
                for link in lab.link
            ]
            try:
                # Each client exits by itself: once answered, or failing at its timeout.
                await asyncio.gather(*(asyncio.to_thread(c.wait, 10) for c in clients))
            finally:
                server.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await server
                sub.close()
        out: list[tuple[int, str]] = []
        for client in clients:
            stdout, stderr = client.communicate()
            out.append((client.returncode, stdout.decode() + stderr.decode()))
        return out

    with lab.inside():
        outputs = run(serve(), timeout=20)
    print(f"\nmcastio heard M-SEARCH: {sorted(heard)}")
    assert sorted(heard) == [(lk.host_if, lk.peer_addr) for lk in lab.link]
    for link, (code, text) in zip(lab.link, outputs, strict=True):
        print(f"  node-ssdp client on {link.peer_if}: {text.strip()}")
        assert code == 0, text
        (line,) = text.splitlines()
        got = json.loads(line)
        assert got["status"] == 200
        assert got["headers"]["USN"] == f"uuid:mcastio-host-{link.host_if}::{HOST_ST}"
        assert got["headers"]["LOCATION"] == f"http://{link.peer_addr}/ignored"
        # From the host's address on that link and from port 1900, as a device answers.
        assert (got["address"], got["port"]) == (link.host_addr, SSDP_PORT)


@pytest.mark.lab
@pytest.mark.parametrize("source_port", ["ephemeral", "group"])
def test_multicast_dns_answers_every_link_on_both_families(npm_lab: Lab, source_port: str) -> None:
    lab = npm_lab
    names = [f"peer{link.index}.local" for link in lab.link]
    responders = [[lk.peer_if, name] for lk, name in zip(lab.link, names, strict=True)]
    with node_peers(lab, "mdns-responder.js", *responders), lab.inside():
        counts, who, stats = run(ask_mdns(names, source_port, every_link(lab)))
    print(f"\nmulticast-dns, source_port={source_port}: {sorted(counts.items())}")
    check_attribution(lab, who)
    kind = "reply" if source_port == "ephemeral" else "group"
    # Every link answered on both families, each the way the port mode calls for:
    # a legacy query by unicast (a reply), one from 5353 by multicast (group traffic).
    assert set(counts) == {(fam, ifname, kind) for fam, ifname in every_link(lab)}
    if source_port == "ephemeral":
        assert stats.replies == sum(counts.values())
    else:
        assert stats.replies == 0


def test_the_pins_are_exact_and_locked() -> None:
    """package.json pins exact versions, and package-lock.json locks those."""
    package = json.loads((NODE_DIR / "package.json").read_text())
    lock = json.loads((NODE_DIR / "package-lock.json").read_text())
    assert package["dependencies"] == {"multicast-dns": "7.2.5", "node-ssdp": "4.0.1"}
    assert lock["packages"][""]["dependencies"] == package["dependencies"]
    for name, version in package["dependencies"].items():
        assert lock["packages"][f"node_modules/{name}"]["version"] == version
        assert lock["packages"][f"node_modules/{name}"]["integrity"].startswith("sha512-")
