"""No behaviour depends on the drain: the compiled one and both pure ones, side by side.

One endpoint per drain (three where the compiled one was built) joins the same group
on the same links, so the kernel hands each of them the same datagrams; every field
of every Datagram, and the truncation and kernel-drop counts, must come out the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import time
from collections.abc import Iterator

import pytest

import mcastio
from mcastio import _net, _receive
from mcastio._model import parse_group
from mcastio._platform import linux
from mcastio._platform.linux import mmsg as _mmsg
from mcastio._platform.linux import receiver
from mcastio.testing import Lab, lab_support
from tests.conftest import receive_drains, require, run, skip_or_fail
from tests.test_receive_lab import peer_socket

pytestmark = pytest.mark.lab

PORT = 5741
#: Every drain this install has (the compiled one where it was built).
PATHS = tuple(receive_drains())
Fields = tuple[bytes, object, object, str, object]


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    require(lab_support())
    if not _mmsg.available():
        skip_or_fail("this libc has no recvmmsg")
    with Lab(links=2) as built:
        built.wait_ipv6_ready(built.link)
        yield built


def endpoints(
    monkeypatch: pytest.MonkeyPatch, group: str, **options: object
) -> list[mcastio.MulticastEndpoint]:
    """One endpoint per drain (the drain is chosen when an endpoint is made)."""
    made = []
    for path in PATHS:
        monkeypatch.setattr(_receive, "USE_COMPILED", path == "compiled")
        monkeypatch.setattr(_receive, "USE_RECVMMSG", path != "recvmsg")
        ep = mcastio.MulticastEndpoint(group, PORT, watch=False, **options)  # type: ignore[arg-type]
        assert ep._engine.receive.path == path
        made.append(ep)
    return made


def fields(d: mcastio.Datagram) -> Fields:
    return (d.data, d.source, d.group, d.interface, d.ttl)


async def collect(ep: mcastio.MulticastEndpoint, sub: mcastio.Subscription) -> list[Fields]:
    """What ``sub`` holds once nothing more arrives for a moment."""
    got: list[Fields] = []
    while True:
        try:
            dgram = await asyncio.wait_for(sub.__anext__(), 0.3)
        except asyncio.TimeoutError:
            return got
        # The same kind of value from every drain: the compiled one builds it
        # untracked and must hand it to the garbage collector, as object.__new__ does.
        assert type(dgram) is mcastio.Datagram
        assert gc.is_tracked(dgram)
        got.append(fields(dgram))


def per_interface(got: list[Fields]) -> dict[str, list[Fields]]:
    """Arrival order holds per socket; a link-scope group has one socket per link."""
    by: dict[str, list[Fields]] = {}
    for item in got:
        by.setdefault(item[3], []).append(item)
    return by


def send_sizes(lab: Lab, family: socket.AddressFamily, group: str, sizes: tuple[int, ...]) -> int:
    sent = 0
    for i, link in enumerate(lab.link):
        with peer_socket(lab, link, family, 5 + i) as sock:
            for size in sizes:
                sock.sendto(bytes([65 + i]) * size, (group, PORT))
                sent += 1
    return sent


# ff02:: is link-scope: its senders use their fe80:: address, scope_id the arrival index.
@pytest.mark.parametrize(
    ("group", "family", "largest"),
    [
        ("239.255.21.1", socket.AF_INET, mcastio._model.MAX_PAYLOAD_V4),
        ("ff02::1:21", socket.AF_INET6, mcastio._model.MAX_PAYLOAD_V6),
        ("ff05::1:21", socket.AF_INET6, mcastio._model.MAX_PAYLOAD_V6),
    ],
)
def test_every_drain_gives_the_same_datagrams(
    lab: Lab,
    monkeypatch: pytest.MonkeyPatch,
    group: str,
    family: socket.AddressFamily,
    largest: int,
) -> None:
    sizes = (0, 1, 64, 1400, 9000, largest)

    async def main() -> list[list[Fields]]:
        eps = endpoints(monkeypatch, group, receive_ttl=True)
        async with contextlib.AsyncExitStack() as stack:
            for ep in eps:
                await stack.enter_async_context(ep)
            subs = [ep.subscribe() for ep in eps]
            sent = send_sizes(lab, family, group, sizes)
            got = [await collect(ep, sub) for ep, sub in zip(eps, subs, strict=True)]
            assert [len(g) for g in got] == [sent] * len(PATHS)
            assert {ep.stats.truncated for ep in eps} == {0}
        return got

    with lab.inside():
        got = run(main())
    first = got[0]
    assert all(per_interface(g) == per_interface(first) for g in got[1:])
    assert sorted({len(f[0]) for f in first}) == sorted(sizes)
    if group.startswith("ff02"):
        hosts = {f[1] for f in first}
        assert all(str(h[0]).startswith("fe80:") and h[3] > 0 for h in hosts)  # type: ignore[index]


@pytest.mark.parametrize(
    ("groups", "family"),
    [
        (("239.255.21.11", "239.255.21.12", "239.255.21.13"), socket.AF_INET),
        (("ff05::1:2111", "ff05::1:2112", "ff05::1:2113"), socket.AF_INET6),
    ],
)
def test_every_drain_gives_the_same_datagrams_for_several_groups(
    lab: Lab,
    monkeypatch: pytest.MonkeyPatch,
    groups: tuple[str, ...],
    family: socket.AddressFamily,
) -> None:
    """An endpoint of three groups: each datagram carries the group it was sent to, on
    every drain; after one group is removed, its datagrams are counted, not delivered
    (no drain may deliver it from an arrival it remembers)."""
    sizes = (0, 64, 1400)

    async def main() -> tuple[list[list[Fields]], list[list[Fields]], list[int]]:
        eps = endpoints(monkeypatch, groups[0], receive_ttl=True)
        async with contextlib.AsyncExitStack() as stack:
            for ep in eps:
                await stack.enter_async_context(ep)
                for group in groups[1:]:
                    await ep.add_group(group)
            subs = [ep.subscribe() for ep in eps]
            sent = sum(send_sizes(lab, family, group, sizes) for group in groups)
            got = [await collect(ep, sub) for ep, sub in zip(eps, subs, strict=True)]
            assert [len(g) for g in got] == [sent] * len(PATHS)
            for ep in eps:
                await ep.remove_group(groups[1])
            # The removed group's traffic may still reach the port (another socket
            # of this host holds it); none of it is delivered.
            sent = sum(send_sizes(lab, family, group, sizes) for group in groups)
            after = [await collect(ep, sub) for ep, sub in zip(eps, subs, strict=True)]
        return got, after, [ep.stats.not_for_group for ep in eps]

    with lab.inside():
        got, after, not_for_group = run(main())
    first = got[0]
    assert all(per_interface(g) == per_interface(first) for g in got[1:])
    # Every group's datagrams, each with its own group (the payload names the link).
    assert {f[2] for f in first} == {str(parse_group(g)) for g in groups}
    assert all(per_interface(a) == per_interface(after[0]) for a in after[1:])
    kept = {f[2] for f in after[0]}
    assert kept == {str(parse_group(g)) for g in (groups[0], groups[2])}
    assert len(set(not_for_group)) == 1


def test_every_drain_truncates_alike(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    # Small payload room, so "oversize" is a datagram of more than 2048 bytes.
    monkeypatch.setattr(_mmsg, "SLOT", 2048)
    monkeypatch.setattr(_net, "RECV_BUFSIZE", 2048)
    group = "239.255.21.2"
    sizes = (0, 2047, 2048, 2049, 5000, 3)

    async def main() -> tuple[list[list[Fields]], list[int]]:
        eps = endpoints(monkeypatch, group)
        async with contextlib.AsyncExitStack() as stack:
            for ep in eps:
                await stack.enter_async_context(ep)
            subs = [ep.subscribe() for ep in eps]
            send_sizes(lab, socket.AF_INET, group, sizes)
            got = [await collect(ep, sub) for ep, sub in zip(eps, subs, strict=True)]
            return got, [ep.stats.truncated for ep in eps]

    with lab.inside():
        got, truncated = run(main())
    assert all(g == got[0] for g in got)
    assert len(got[0]) == 8
    assert truncated == [4] * len(PATHS)


@pytest.mark.parametrize("stamped", [False, True], ids=["meminfo", "rxq_ovfl"])
def test_every_drain_reads_the_same_kernel_drop_counts(
    lab: Lab, monkeypatch: pytest.MonkeyPatch, stamped: bool
) -> None:
    """Drops read with SO_MEMINFO (the default: no control message per datagram), and
    with SO_RXQ_OVFL stamped on every datagram (kept where SO_MEMINFO is missing)."""
    monkeypatch.setattr(receiver, "STAMP_DROPS", stamped)
    group = "239.255.21.3"
    link = lab.link[0]
    burst = 300

    async def main() -> tuple[list[list[Fields]], list[int], list[int], list[int]]:
        eps = endpoints(monkeypatch, group, interfaces=[link.host_if], receive_buffer=1)
        async with contextlib.AsyncExitStack() as stack:
            for ep in eps:
                await stack.enter_async_context(ep)
            # The receive sockets (bound to the group); reply sockets are not the drains'.
            socks = [s for ep in eps for s in ep._engine.receive.drops._by_socket]
            socks = [s for s in socks if s.getsockname()[0] == group]
            assert len(socks) == len(eps)
            asked = [s.getsockopt(socket.SOL_SOCKET, linux.SO_RXQ_OVFL) for s in socks]
            subs = [ep.subscribe(queue_size=burst + 10) for ep in eps]
            with peer_socket(lab, link, socket.AF_INET, 1) as sock:
                # No await between the sends: no endpoint reads, every buffer overflows.
                for i in range(burst):
                    sock.sendto(i.to_bytes(2, "big") * 500, (group, PORT))
                # Blocking on purpose: every datagram reaches the sockets before a read.
                time.sleep(0.05)  # noqa: ASYNC251
                got = [await collect(ep, sub) for ep, sub in zip(eps, subs, strict=True)]
                # The next datagram carries each socket's drop count where SO_RXQ_OVFL is on.
                sock.sendto(b"last", (group, PORT))
                for ep, sub, into in zip(eps, subs, got, strict=True):
                    into += await collect(ep, sub)
            # What SO_RXQ_OVFL reported, read before SO_MEMINFO refreshes it.
            reported = [
                ep._engine.receive.drops._by_socket[s] for ep, s in zip(eps, socks, strict=True)
            ]
            return got, reported, [ep.stats.kernel_dropped for ep in eps], asked

    with lab.inside():
        got, reported, dropped, asked = run(main())
    assert all(g == got[0] for g in got)
    assert got[0][-1][0] == b"last"
    assert asked == [int(stamped)] * len(asked)
    # Stamped, every drain parsed the count off the datagram; else none was there to parse.
    assert reported == (dropped if stamped else [0] * len(PATHS))
    assert dropped == [dropped[0]] * len(PATHS)
    assert dropped[0] > 0
    assert len(got[0]) + dropped[0] == burst + 1
