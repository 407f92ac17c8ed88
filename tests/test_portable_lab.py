"""The portable profile (``MCASTIO_PORTABLE=1``) on a real kernel.

What runs elsewhere runs here on Linux: the interface watch polls, the keeper is
left out with its reason logged, and the querier refuses naming the profile, while
the group is still received on every link with the arrival interface. This proves
the portable profile's choices on Linux; it does not prove macOS, FreeBSD or
Windows (docs/explanation/platforms.md).
"""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest

import mcastio
from mcastio import MulticastEndpoint
from mcastio._platform import PORTABLE_ENV
from mcastio._platform.linux.procnet import parse_igmp6
from mcastio.testing import Lab
from tests.conftest import run, wait_for

# No drain takes part in these claims: the pure pass leaves the file out.
pytestmark = [pytest.mark.lab, pytest.mark.one_path]

GROUP = "239.255.43.1"
PORT = 5043


def test_portable_profile_polls_keeps_no_keeper_and_receives_on_every_link(
    lab: Lab, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(PORTABLE_ENV, "1")
    caplog.set_level(logging.INFO, logger="mcastio")

    async def arrivals(sub: mcastio.Subscription, want: set[str]) -> set[str]:
        seen: set[str] = set()
        while not want <= seen:
            dgram = await asyncio.wait_for(sub.__anext__(), 5)
            seen.add(dgram.interface)
        return seen

    async def main() -> None:
        async with MulticastEndpoint(GROUP, PORT, poll_interval=0.05) as ep:
            assert ep.watch_mode == "poll"
            assert ep.keepalive_state == ()
            with pytest.raises(mcastio.MulticastError, match="portable profile"):
                await mcastio.Querier().start()
            sub = ep.subscribe()
            for link in lab.link:
                lab.peer_send(link, GROUP, PORT, link.host_if.encode())
            assert await arrivals(sub, {ln.host_if for ln in lab.link}) >= {
                ln.host_if for ln in lab.link
            }
            new = lab.add_link()
            await wait_for(
                lambda: new.host_if in {i.name for i in ep.interfaces},
                what=f"{new.host_if} joined by polling",
            )
            lab.peer_send(new, GROUP, PORT, b"polled")
            assert new.host_if in await arrivals(sub, {new.host_if})

    with lab.inside():
        run(main())
    said = [r.getMessage() for r in caplog.records]
    assert any("netlink watch is off in the portable profile" in m for m in said), said
    assert any("membership keeper is off in the portable profile" in m for m in said), said


def _igmp6_held(groups: set[str]) -> dict[str, set[str]]:
    """Group -> the interfaces this namespace's kernel holds it on (/proc/net/igmp6)."""
    with open("/proc/net/igmp6") as f:
        memberships = parse_igmp6(f.read())
    held: dict[str, set[str]] = {g: set() for g in groups}
    for m in memberships:
        if str(m.group) in groups:
            held[str(m.group)].add(m.interface)
    return held


def test_portable_endpoint_reads_a_socket_per_link_and_group_with_ttl_none(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PORTABLE_ENV, "1")
    names = {ln.host_if for ln in lab.link}
    added = "239.255.43.2"

    async def received(sub: mcastio.Subscription, count: int) -> set[tuple[str, str, str | None]]:
        got: set[tuple[str, str, str | None]] = set()
        while len(got) < count:
            d = await asyncio.wait_for(sub.__anext__(), 5)
            assert d.ttl is None, d
            got.add((d.data.decode(), d.interface, d.group))
        return got

    async def main() -> None:
        async with MulticastEndpoint(GROUP, PORT, receive_ttl=True, poll_interval=0.05) as ep:
            engine = ep._engine
            sockets = engine.memberships.sockets
            # One socket per link, each read by the portable drain, none by pktinfo.
            assert len(sockets) == len(names)
            assert {engine.receive.portable[s].interface for s in sockets} == names
            sub = ep.subscribe()
            await ep.add_group(added)
            assert len(engine.memberships.sockets) == 2 * len(names)
            for link in lab.link:
                for group in (GROUP, added):
                    lab.peer_send(link, group, PORT, link.host_if.encode())
            want = {(n, n, g) for n in names for g in (GROUP, added)}
            assert await received(sub, len(want)) == want
            await ep.remove_group(added)
            assert set(engine.memberships.sockets) == set(sockets)
            assert set(engine.receive.portable) == set(sockets)
        assert engine.receive.portable == {}

    with lab.inside():
        run(main())


def test_portable_interface_holds_every_group_or_none(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PORTABLE_ENV, "1")
    groups = ["ff02::43:1", "ff02::43:2"]
    blocked = lab.link[1].host_if

    async def main(blocker: socket.socket) -> None:
        async with MulticastEndpoint(groups, PORT, poll_interval=0.05) as ep:
            # The second group cannot bind on the blocked link: the first left it too.
            assert blocked not in {i.name for i in ep.interfaces}
            held = _igmp6_held(set(groups))
            others = {ln.host_if for ln in lab.link} - {blocked}
            assert held == {g: others for g in groups}, held
            blocker.close()
            await wait_for(
                lambda: blocked in {i.name for i in ep.interfaces},
                what=f"{blocked} joined once its port was free",
            )
            held = _igmp6_held(set(groups))
            assert all(blocked in held[g] for g in groups), held

    with lab.inside():
        index = socket.if_nametoindex(blocked)
        # Another program holds the port on that link alone, without SO_REUSEADDR.
        blocker = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        try:
            blocker.bind((groups[1], PORT, 0, index))
            run(main(blocker))
        finally:
            blocker.close()
