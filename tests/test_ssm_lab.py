"""Source-specific multicast in a namespace lab: (S,G) joins, other senders filtered."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
import select
import socket
import subprocess
import time
from collections.abc import Callable

import pytest

from mcastio import (
    Datagram,
    MulticastEndpoint,
    MulticastError,
    Subscription,
    create_multicast_endpoint,
)
from mcastio._model import Plan
from mcastio._platform.linux import MCAST_JOIN_SOURCE_GROUP
from mcastio._platform.linux.receiver import _GROUP_SOURCE_REQ, _sockaddr
from mcastio.testing import Lab, tcpdump_argv
from tests.conftest import run

# Every test runs with each receive drain (compiled, recvmmsg and recvmsg).
pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("receive_drain")]

PORT = 5401


async def collect(sub: Subscription, payloads: set[bytes], timeout: float = 5.0) -> list[Datagram]:
    got: list[Datagram] = []

    async def gather() -> None:
        async for dgram in sub:
            got.append(dgram)
            if payloads <= {d.data for d in got}:
                return

    try:
        await asyncio.wait_for(gather(), timeout)
    except asyncio.TimeoutError:
        raise AssertionError(f"only {got} of {payloads!r} within {timeout}s") from None
    return got


def source_filters(lab: Lab, v6: bool) -> set[tuple[str, str, str]]:
    """(device, group, source) INCLUDE entries the host kernel holds, from /proc."""
    text = lab.run(lab.host, "cat", "/proc/net/mcfilter6" if v6 else "/proc/net/mcfilter").stdout
    entries = set()
    for line in text.splitlines()[1:]:
        _idx, dev, group, source, include, _exclude = line.split()
        if int(include) == 0:
            continue
        # mcfilter6 prints the 16 bytes in hex, mcfilter the host-order integer.
        g, s = (
            str(
                ipaddress.IPv6Address(bytes.fromhex(x)) if v6 else ipaddress.IPv4Address(int(x, 16))
            )
            for x in (group, source)
        )
        entries.add((dev, g, s))
    return entries


@pytest.mark.parametrize("v6", [False, True], ids=["igmpv3", "mldv2"])
def test_only_the_allowed_source_is_delivered(lab: Lab, v6: bool) -> None:
    link = lab.link[1]
    if v6:
        group = "ff3e::4242"
        allowed = str(ipaddress.IPv6Address(link.peer_addr6 or ""))
        other = str(ipaddress.IPv6Address(allowed) + 1)
        lab.sh(link.peer_ns, f"ip -6 addr add {other}/64 dev {link.peer_if} nodad")
    else:
        group = "232.1.2.3"
        allowed = link.peer_addr
        other = str(ipaddress.IPv4Address(allowed) + 1)
        lab.sh(link.peer_ns, f"ip addr add {other}/24 dev {link.peer_if}")

    async def main() -> None:
        ssm = MulticastEndpoint(group, PORT, sources=[allowed])
        # A control endpoint without sources= on the same port proves that the
        # other sender's datagram really reached the host.
        control = MulticastEndpoint(group, PORT)
        async with ssm, control:
            assert ssm.sources == (allowed,)
            ssm_sub, control_sub = ssm.subscribe(), control.subscribe()
            lab.peer_send(link, group, PORT, b"other", source=other)
            lab.peer_send(link, group, PORT, b"allowed", source=allowed)
            seen = await collect(control_sub, {b"other", b"allowed"})
            assert {(d.data, d.source[0]) for d in seen} == {
                (b"other", other),
                (b"allowed", allowed),
            }
            # Sent after the control saw "other": if the SSM socket had been given
            # "other", it would be queued ahead of this marker.
            lab.peer_send(link, group, PORT, b"end", source=allowed)
            got = await collect(ssm_sub, {b"allowed", b"end"})
            assert [(d.data, d.source[0], d.interface) for d in got] == [
                (b"allowed", allowed, "eth1"),
                (b"end", allowed, "eth1"),
            ]

            expected = {(lk.host_if, group, allowed) for lk in lab.link}
            assert source_filters(lab, v6) == expected

            # The path a watcher takes: leave and re-join one interface via Links.apply.
            eth2 = next(i for i in ssm.interfaces if i.name == "eth2")
            assert ssm._engine.links.apply(Plan(remove=(eth2,))) == []
            assert source_filters(lab, v6) == expected - {("eth2", group, allowed)}
            assert ssm._engine.links.apply(Plan(add=(eth2,))) == []
            assert source_filters(lab, v6) == expected

    with lab.inside():
        run(main())


def test_protocol_api_passes_sources(lab: Lab) -> None:
    async def main() -> None:
        transport, _protocol = await create_multicast_endpoint(
            asyncio.DatagramProtocol, "ff3e::4243", PORT, sources=["fd00:2::2"]
        )
        try:
            assert transport.endpoint.sources == ("fd00:2::2",)
            assert ("eth2", "ff3e::4243", "fd00:2::2") in source_filters(lab, v6=True)
        finally:
            await transport.endpoint.aclose()

    with lab.inside():
        run(main())


def _mld_max_msf(lab: Lab) -> int:
    # Global, not per namespace: only the initial namespace shows it.
    try:
        with open("/proc/sys/net/ipv6/mld_max_msf", encoding="ascii") as f:
            return int(f.read())
    except OSError:
        pass
    # Elsewhere (a plain user's unshare -rnm) the kernel tells it by refusing one
    # source more than the limit on a plain socket, with ENOBUFS.
    group = ipaddress.IPv6Address("ff3e::4243")
    with lab.inside(), socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        index = socket.if_nametoindex(lab.link[0].host_if)
        for n in range(100_000):
            source = ipaddress.IPv6Address("fd0a::1") + n
            req = _GROUP_SOURCE_REQ.pack(index, _sockaddr(group), _sockaddr(source))
            try:
                sock.setsockopt(socket.IPPROTO_IPV6, MCAST_JOIN_SOURCE_GROUP, req)
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                return n
    raise AssertionError("the kernel took 100,000 sources for one group")


@pytest.mark.parametrize("v6", [False, True], ids=["igmp_max_msf", "mld_max_msf"])
def test_too_many_sources_names_the_sysctl(make_lab: Callable[..., Lab], v6: bool) -> None:
    if v6:
        lab = make_lab(links=1)
        limit, sysctl = _mld_max_msf(lab), "net.ipv6.mld_max_msf"
        group = "ff3e::4244"
        base = ipaddress.IPv6Address("fd09::1")
    else:
        # Per namespace for IPv4, so the lab can lower it.
        limit, sysctl = 2, "net.ipv4.igmp_max_msf"
        lab = make_lab(links=1, sysctls={sysctl: "2"})
        group = "232.1.2.4"
        base = ipaddress.IPv4Address("10.9.0.1")  # type: ignore[assignment]
    sources = [str(base + i) for i in range(limit + 1)]

    async def main() -> None:
        async with MulticastEndpoint(group, PORT, sources=sources[:limit]) as ep:
            assert len(ep.sources) == limit
        with pytest.raises(MulticastError) as info:
            await MulticastEndpoint(group, PORT, sources=sources).start()
        assert f"sysctl {sysctl}" in str(info.value.__cause__)
        assert f"source {sources[limit]} " in str(info.value.__cause__)

    with lab.inside():
        run(main())


def _read_until(proc: subprocess.Popen[bytes], pattern: str, timeout: float = 5.0) -> str:
    """tcpdump lines up to the first one containing ``pattern``."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    seen = ""
    deadline = time.monotonic() + timeout
    while pattern not in seen:
        remaining = deadline - time.monotonic()
        ready, _, _ = select.select([fd], [], [], max(remaining, 0))
        if not ready:
            raise AssertionError(f"no {pattern!r} on the wire within {timeout}s; saw {seen!r}")
        chunk = os.read(fd, 65536).decode()
        if not chunk:
            raise AssertionError(f"tcpdump ended before {pattern!r}; saw {seen!r}")
        seen += chunk
    return seen


@pytest.mark.usefixtures("need_tcpdump")
@pytest.mark.parametrize("v6", [False, True], ids=["igmpv3", "mldv2"])
def test_reports_on_the_wire_name_the_source(lab: Lab, v6: bool) -> None:
    """The peer (where a router would be) sees IGMPv3/MLDv2 ALLOW on join, BLOCK on leave."""
    link = lab.link[1]
    group, source = ("ff3e::4245", "fd00:1::2") if v6 else ("232.1.2.5", link.peer_addr)
    # MLD reports carry a hop-by-hop header, so match the MLDv2 routers' address instead.
    bpf = "ip6 dst ff02::16" if v6 else "igmp"
    dump = lab.popen(
        link.peer_ns,
        *(*tcpdump_argv(), "-vv", "-n", "-l", "-i", link.peer_if, bpf),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert dump.stderr is not None
    while "listening on" not in (line := dump.stderr.readline().decode()):
        assert line, "tcpdump did not start"

    async def main() -> None:
        async with MulticastEndpoint(group, PORT, sources=[source]):
            _read_until(dump, f"[gaddr {group} allow {{ {source} }}]")

    with lab.inside():
        run(main())
    _read_until(dump, f"[gaddr {group} block {{ {source} }}]")
