"""IPv4 and IPv6 side by side: DualStackEndpoint for mDNS in one lab."""

from __future__ import annotations

import asyncio
import gc
import socket

import pytest

from mcastio import DualStackEndpoint, MulticastEndpoint, MulticastError, Subscription
from mcastio.testing import Lab
from tests.conftest import run

# Every test runs with each receive drain (compiled, recvmmsg and recvmsg).
pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("receive_drain")]

MDNS4, MDNS6, MDNS_PORT = "224.0.0.251", "ff02::fb", 5353


async def collect(
    sub: Subscription, count: int, timeout: float = 5.0
) -> list[tuple[str | None, str, bytes]]:
    got: list[tuple[str | None, str, bytes]] = []

    async def gather() -> None:
        async for dgram in sub:
            got.append((dgram.group, dgram.interface, dgram.data))
            if len(got) == count:
                return

    try:
        await asyncio.wait_for(gather(), timeout)
    except asyncio.TimeoutError:
        raise AssertionError(f"only {got} of {count} within {timeout}s") from None
    return got


def test_mdns_on_both_families_receive_and_send(lab: Lab) -> None:
    listeners = {
        (link.host_if, family): lab.peer_listen(link, group, MDNS_PORT)
        for link in lab.link
        for family, group in (("v4", MDNS4), ("v6", MDNS6))
    }

    async def main() -> None:
        async with DualStackEndpoint(MDNS4, MDNS6, MDNS_PORT) as ds:
            assert ds.ipv4 is not None
            assert ds.ipv6 is not None
            assert ds.ipv4.family == socket.AF_INET
            assert ds.ipv6.family == socket.AF_INET6
            sub = ds.subscribe()
            expected = set()
            for link in lab.link:
                for group in (MDNS4, MDNS6):
                    payload = f"{group} via {link.host_if}\n".encode()
                    lab.peer_send(link, group, MDNS_PORT, payload)
                    expected.add((group, link.host_if, payload))
            got = await collect(sub, len(expected))
            # One stream, each datagram tagged with its family's group and its link.
            assert sorted(got) == sorted(expected)

            for payload in (b"query\n", b"end\n"):
                result = await ds.send_all(payload)
                assert result.ok
                assert [r.interface for r in result.ipv4] == ["eth0", "eth1", "eth2"]
                assert [r.interface for r in result.ipv6] == ["eth0", "eth1", "eth2"]
            sub.close()
            assert ds.ipv4._engine.receive.sinks == ()
            assert ds.ipv6._engine.receive.sinks == ()
            # A subscription dropped without close() detaches when collected.
            held = ds.subscribe()
            assert len(ds.ipv4._engine.receive.sinks) == 1
            del held
            gc.collect()
            assert ds.ipv4._engine.receive.sinks == ()
            assert ds.ipv6._engine.receive.sinks == ()

    with lab.inside():
        run(main())
    for key, listener in listeners.items():
        listener.wait_for(b"end")
        # The peer's own test datagram loops back to its listener, then the host's two.
        lines = listener.lines()
        family = MDNS4 if key[1] == "v4" else MDNS6
        assert lines == [f"{family} via {key[0]}".encode(), b"query", b"end"], key


def test_plain_endpoints_side_by_side_on_one_port(lab: Lab) -> None:
    """One endpoint per family on the same port: neither sees the other family's traffic."""

    async def main() -> None:
        async with (
            MulticastEndpoint(MDNS4, MDNS_PORT) as v4,
            MulticastEndpoint(MDNS6, MDNS_PORT) as v6,
        ):
            s4, s6 = v4.subscribe(), v6.subscribe()
            link = lab.link[1]
            lab.peer_send(link, MDNS4, MDNS_PORT, b"four")
            lab.peer_send(link, MDNS6, MDNS_PORT, b"six")
            lab.peer_send(link, MDNS4, MDNS_PORT, b"four-end")
            lab.peer_send(link, MDNS6, MDNS_PORT, b"six-end")
            assert [d[2] for d in await collect(s4, 2)] == [b"four", b"four-end"]
            assert [d[2] for d in await collect(s6, 2)] == [b"six", b"six-end"]

    with lab.inside():
        run(main())


def test_one_family_missing(make_lab: object) -> None:
    # Only link-local IPv6 addresses left: a site-scope IPv6 group has no interface.
    lab = make_lab(links=2)  # type: ignore[operator]
    for link in lab.link:
        lab.sh(lab.host, f"ip -6 addr del {link.host_addr6}/64 dev {link.host_if}")

    async def main() -> None:
        async with DualStackEndpoint("239.255.0.9", "ff05::9", 5409) as ds:
            assert ds.ipv4 is not None
            assert ds.ipv6 is None
            result = await ds.send_all(b"x")
            assert result.ok
            assert len(result.ipv4) == 2
            assert result.ipv6 == ()
        with pytest.raises(MulticastError, match="eth1: only a link-local IPv6 address"):
            await DualStackEndpoint("239.255.0.9", "ff05::9", 5409, require_both=True).start()

    with lab.inside():
        run(main())


def test_dual_stack_rejects_swapped_groups() -> None:
    with pytest.raises(ValueError, match="group_v4"):
        DualStackEndpoint("ff02::fb", "224.0.0.251", MDNS_PORT)
    with pytest.raises(ValueError, match="group_v6"):
        DualStackEndpoint("224.0.0.251", "239.1.1.1", MDNS_PORT)
