"""Request and reply with real responders in the lab: avahi-daemon, python-zeroconf, minidlna.

Each test asks every link and checks that the answer of the responder behind
that link arrives, attributed to that link: as a reply (``group`` None) when the
query left from an ephemeral port, as group traffic when it left from the group's
port. The counts per interface are printed (``pytest -s``) for the record.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections import Counter
from collections.abc import Sequence

import pytest

import mcastio
from mcastio.testing import Lab
from mcastio.testing.responders import (
    Avahi,
    MiniDlna,
    ZeroconfResponder,
    responder_support,
    start_all,
)
from tests.conftest import require, run

# Every test runs on the compiled path and the pure one (recvmmsg; the recvmsg drain
# runs in the other receive tests): real peers take long, a third run finds nothing new.
pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("receive_path")]

MDNS4, MDNS6, MDNS_PORT = "224.0.0.251", "ff02::fb", 5353
SSDP, SSDP_PORT = "239.255.255.250", 1900


@pytest.fixture
def peers_lab(lab: Lab) -> Lab:
    require(responder_support())
    lab.wait_ipv6_ready(lab.link)
    return lab


def mdns_query(names: Sequence[str], query_id: int = 0x4D43) -> bytes:
    """One question per name and type (A and AAAA): each responder answers its own."""
    out = [struct.pack("!6H", query_id, 0, 2 * len(names), 0, 0, 0)]
    for name in names:
        encoded = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
        out += [encoded + struct.pack("!HH", qtype, 1) for qtype in (1, 28)]
    return b"".join(out)


def _read_name(data: bytes, pos: int) -> tuple[str, int]:
    labels: list[str] = []
    end = -1
    for _ in range(64):
        length = data[pos]
        if length & 0xC0 == 0xC0:
            end = pos + 2 if end < 0 else end
            pos = struct.unpack_from("!H", data, pos)[0] & 0x3FFF
        elif length == 0:
            return ".".join(labels), (end if end >= 0 else pos + 1)
        else:
            labels.append(data[pos + 1 : pos + 1 + length].decode())
            pos += 1 + length
    raise ValueError("pointer loop")


def answered_name(data: bytes, names: Sequence[str]) -> str | None:
    """Which of ``names`` the answer section of a DNS response (QR set) is about."""
    try:
        _id, flags, qd, an = struct.unpack_from("!4H", data)
        if not flags & 0x8000 or an == 0:
            return None
        pos = 12
        for _ in range(qd):
            pos = _read_name(data, pos)[1] + 4
        owner = _read_name(data, pos)[0]
    except (struct.error, IndexError, ValueError):
        return None
    return owner if owner in names else None


Key = tuple[str, str, str]  # (family, interface, "reply" | "group")


async def ask_mdns(
    names: Sequence[str], source_port: str, until: set[tuple[str, str]], timeout: float = 4.0
) -> tuple[Counter[Key], list[tuple[str, str | None]], mcastio.EndpointStats]:
    """Query both families on every link until each (family, interface) in ``until`` answered.

    Returns the answer counts, (interface, answered name) pairs, and the stats.
    """
    counts: Counter[Key] = Counter()
    who: list[tuple[str, str | None]] = []
    async with mcastio.DualStackEndpoint(
        MDNS4, MDNS6, MDNS_PORT, source_port=source_port, watch=False, require_both=True
    ) as ep:
        sub = ep.subscribe()
        query = mdns_query(names)
        seen: set[tuple[str, str]] = set()

        async def collect() -> None:
            async for dgram in sub:
                name = answered_name(dgram.data, names)
                if name is None:
                    continue
                family = "v6" if ":" in dgram.source[0] else "v4"
                counts[(family, dgram.interface, "reply" if dgram.is_reply else "group")] += 1
                who.append((dgram.interface, name))
                seen.add((family, dgram.interface))
                if until <= seen:
                    return

        reader = asyncio.ensure_future(collect())
        # A responder stays silent about a record it multicast in the last second:
        # ask again, as real queriers do.
        for _ in range(int(timeout / 0.5)):
            await ep.send_all(query)
            done, _ = await asyncio.wait({reader}, timeout=0.5)
            if done:
                break
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        stats = ep.ipv4.stats if ep.ipv4 else None
        stats6 = ep.ipv6.stats if ep.ipv6 else None
        assert stats is not None
        assert stats6 is not None
        sub.close()
    merged = mcastio.EndpointStats(
        stats.received + stats6.received,
        stats.not_for_group + stats6.not_for_group,
        0,
        0,
        0,
        stats.replies + stats6.replies,
    )
    return counts, who, merged


def every_link(lab: Lab) -> set[tuple[str, str]]:
    return {(fam, link.host_if) for link in lab.link for fam in ("v4", "v6")}


def check_attribution(lab: Lab, who: list[tuple[str, str | None]]) -> None:
    # The answer naming peerN comes in on ethN, never on another link.
    for interface, name in who:
        assert name == f"peer{interface.removeprefix('eth')}.local", (interface, name)


@pytest.mark.parametrize("source_port", ["ephemeral", "group"])
def test_avahi_answers_every_link(peers_lab: Lab, source_port: str) -> None:
    lab = peers_lab
    names = [f"peer{link.index}.local" for link in lab.link]
    daemons = [Avahi(lab, lk.peer_ns, [lk.peer_if], f"peer{lk.index}") for lk in lab.link]
    start_all(daemons)
    try:
        with lab.inside():
            counts, who, stats = run(ask_mdns(names, source_port, every_link(lab)))
    finally:
        for daemon in daemons:
            daemon.stop()
    print(f"\navahi, source_port={source_port}: {sorted(counts.items())}")
    check_attribution(lab, who)
    kind = "reply" if source_port == "ephemeral" else "group"
    assert {(fam, ifname) for fam, ifname, k in counts if k == kind} == every_link(lab)
    if source_port == "ephemeral":
        # avahi answers a query from a port other than 5353 by unicast only (RFC 6762 §6.7).
        assert {k for _, _, k in counts} == {"reply"}
        assert stats.replies == sum(counts.values())
    else:
        assert stats.replies == 0


@pytest.mark.parametrize("source_port", ["ephemeral", "group"])
def test_zeroconf_answers_every_link(peers_lab: Lab, source_port: str) -> None:
    lab = peers_lab
    names = [f"peer{link.index}.local" for link in lab.link]
    daemons = [
        ZeroconfResponder(lab, lk.peer_ns, f"peer{lk.index}", [lk.peer_addr, lk.peer_addr6 or ""])
        for lk in lab.link
    ]
    start_all(daemons)
    try:
        with lab.inside():
            counts, who, _stats = run(ask_mdns(names, source_port, every_link(lab)))
    finally:
        for daemon in daemons:
            daemon.stop()
    print(f"\nzeroconf, source_port={source_port}: {sorted(counts.items())}")
    check_attribution(lab, who)
    assert {(fam, ifname) for fam, ifname, _ in counts} == every_link(lab)
    if source_port == "ephemeral":
        # python-zeroconf answers a legacy IPv4 query by unicast; an IPv6 one it
        # answers by multicast, which the endpoint receives as group traffic.
        assert {(fam, ifname) for fam, ifname, k in counts if k == "reply"} >= {
            ("v4", link.host_if) for link in lab.link
        }
    else:
        assert {k for _, _, k in counts} == {"group"}


def m_search(st: str = "upnp:rootdevice") -> bytes:
    return (
        "M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\n"
        f'MAN: "ssdp:discover"\r\nMX: 1\r\nST: {st}\r\n\r\n'
    ).encode()


def test_minidlna_answers_m_search_on_every_link(peers_lab: Lab) -> None:
    lab = peers_lab
    daemons = [MiniDlna(lab, lk.peer_ns, lk.peer_if, f"peer{lk.index}") for lk in lab.link]
    start_all(daemons)

    async def search(source_port: str) -> tuple[Counter[tuple[str, str, bool]], list[bytes]]:
        counts: Counter[tuple[str, str, bool]] = Counter()
        # Stands in for the host's own SSDP stack, bound to the port as such stacks are.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as host_stack:
            host_stack.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            host_stack.bind(("0.0.0.0", SSDP_PORT))
            host_stack.setblocking(False)
            async with mcastio.MulticastEndpoint(
                SSDP, SSDP_PORT, source_port=source_port, watch=False
            ) as ep:
                sub = ep.subscribe()
                await ep.send_all(m_search())
                await asyncio.sleep(1.2)  # MX: 1, the longest a responder may wait
                while sub.queued:
                    d = await sub.__anext__()
                    if d.data.startswith(b"HTTP/1.1 200 OK"):
                        counts[(d.interface, d.source[0], d.is_reply)] += 1
                        assert d.source[1] == SSDP_PORT
            taken: list[bytes] = []
            while True:
                try:
                    taken.append(host_stack.recv(2048))
                except BlockingIOError:
                    break
        return counts, taken

    try:
        with lab.inside():
            replies, to_stack = run(search("ephemeral"))
            group_mode, to_stack_group = run(search("group"))
    finally:
        for daemon in daemons:
            daemon.stop()
    print(f"\nminidlna, ephemeral: {sorted(replies.items())}; host stack got {len(to_stack)}")
    print(f"minidlna, group: {sorted(group_mode.items())}; host stack got {len(to_stack_group)}")
    assert {(ifname, src) for ifname, src, _ in replies} == {
        (lk.host_if, lk.peer_addr) for lk in lab.link
    }
    assert all(is_reply for _, _, is_reply in replies)
    # The stand-in also hears minidlna's periodic NOTIFYs (multicast, IP_MULTICAST_ALL
    # is on for it), whenever they fall: only answers to the search count here.
    assert [t for t in to_stack if t.startswith(b"HTTP/1.1 200 OK")] == []
    # From the group's port the search is answered by unicast to port 1900, which
    # belongs to the program bound there: mcastio takes none of it.
    assert group_mode == Counter()
    assert len([t for t in to_stack_group if t.startswith(b"HTTP/1.1 200 OK")]) == len(lab.link)
