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

import pytest

import mcastio
from mcastio import MulticastEndpoint
from mcastio._platform import PORTABLE_ENV
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
