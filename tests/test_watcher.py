"""The watcher's scheduling and the endpoint's watch options, with injected inputs.

No multicast sockets: the snapshot source is a function returning values.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from mcastio import InterfaceEvent, MulticastEndpoint, MulticastError
from mcastio._model import Interface
from mcastio._watch import Backoff
from mcastio._watcher import InterfaceEventStream, Watcher
from tests.conftest import run, wait_for


def test_polling_retries_failed_reconciles_until_they_succeed() -> None:
    calls: list[frozenset[int]] = []

    def reconcile(reannounce: frozenset[int]) -> bool:
        calls.append(reannounce)
        return len(calls) >= 3

    async def main() -> None:
        w = Watcher(
            reconcile,
            netlink=False,
            poll_interval=3600,
            debounce=0,
            backoff=Backoff(first=0.001, cap=0.002),
        )
        w.start(asyncio.get_running_loop())
        assert w.mode == "poll"
        w.trigger()
        # Only the retry timer can bring the later rounds: the poll is an hour away.
        await wait_for(lambda: len(calls) >= 3)
        await w.stop()
        assert w.mode == "stopped"

    run(main())
    assert calls[:3] == [frozenset()] * 3


def test_poll_interval_drives_rounds_without_triggers() -> None:
    rounds: list[float] = []
    fake_now = [0.0]

    def clock() -> float:
        # Each reading moves time on, so every wait is already due.
        fake_now[0] += 10.0
        return fake_now[0]

    def reconcile(_reannounce: frozenset[int]) -> bool:
        rounds.append(fake_now[0])
        return True

    async def main() -> None:
        w = Watcher(reconcile, netlink=False, poll_interval=5.0, clock=clock)
        w.start(asyncio.get_running_loop())
        await wait_for(lambda: len(rounds) >= 3)
        await w.stop()

    run(main())
    assert rounds == sorted(rounds)


def test_a_burst_of_triggers_is_one_reconcile() -> None:
    calls: list[int] = []

    async def main() -> None:
        def count(_r: frozenset[int]) -> bool:
            calls.append(1)
            return True

        w = Watcher(count, netlink=False, poll_interval=3600)
        w.start(asyncio.get_running_loop())
        await asyncio.sleep(0)
        for _ in range(20):
            w.trigger()
        await wait_for(lambda: w.rounds == 1)
        # Nothing else is pending: no trigger, no retry, the poll an hour away.
        for _ in range(10):
            await asyncio.sleep(0)
        assert w.rounds == 1
        await w.stop()

    run(main())
    assert calls == [1]


def test_watcher_rejects_bad_intervals() -> None:
    with pytest.raises(ValueError, match="poll_interval"):
        Watcher(lambda _r: True, poll_interval=0)
    with pytest.raises(ValueError, match="debounce"):
        Watcher(lambda _r: True, debounce=-1)


def test_netlink_mode_opens_and_closes_its_socket() -> None:
    async def main() -> None:
        w = Watcher(lambda _r: True)
        w.start(asyncio.get_running_loop())
        # On Linux, netlink; elsewhere (or refused) the fallback.
        assert w.mode in ("netlink", "poll")
        await w.stop()

    run(main())  # the leak guard fails the test if the socket stays open


# -- endpoint ------------------------------------------------------------------------------


def test_watching_endpoint_starts_with_no_interface(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        ep = MulticastEndpoint("239.255.9.9", 5999, snapshot_source=lambda: (), netlink=False)
        with caplog.at_level(logging.WARNING, logger="mcastio"):
            await ep.start()
        assert ep.interfaces == ()
        assert ep.watch_mode == "poll"
        assert ep.send_all_nowait(b"x") == ()
        await ep.aclose()
        assert ep.watch_mode == "stopped"

    run(main())
    assert "waiting for an interface" in caplog.text


def test_unwatched_endpoint_still_refuses_no_interface() -> None:
    async def main() -> None:
        ep = MulticastEndpoint("239.255.9.9", 5999, snapshot_source=lambda: (), watch=False)
        with pytest.raises(MulticastError, match="no interface"):
            await ep.start()
        assert ep.watch_mode == "off"

    run(main())


def test_failing_snapshot_source_is_retried_not_fatal() -> None:
    reads: list[int] = []

    def source() -> tuple[Interface, ...]:
        reads.append(1)
        if len(reads) > 1:
            raise PermissionError("psutil says no")
        return ()

    async def main() -> None:
        ep = MulticastEndpoint(
            "239.255.9.9", 5999, snapshot_source=source, netlink=False, poll_interval=0.05
        )
        await ep.start()
        await wait_for(lambda: len(reads) >= 3)
        assert not ep.closed
        await ep.aclose()

    run(main())


def test_interface_event_stream_ends_on_close() -> None:
    async def main() -> list[InterfaceEvent]:
        ep = MulticastEndpoint("239.255.9.9", 5999, snapshot_source=lambda: (), netlink=False)
        await ep.start()
        events = ep.interface_events()
        ep._engine.emit([InterfaceEvent("added", "eth9", 9, ("10.9.9.1",))])
        got: list[InterfaceEvent] = []

        async def read() -> None:
            got.extend([e async for e in events])

        reader = asyncio.create_task(read())
        await asyncio.sleep(0)
        await ep.aclose()
        await reader
        return got

    got = run(main())
    assert got == [InterfaceEvent("added", "eth9", 9, ("10.9.9.1",))]


def test_interface_event_stream_is_bounded() -> None:
    stream = InterfaceEventStream(2)
    for i in range(5):
        stream._push(InterfaceEvent("added", f"e{i}", i, ()))
    assert stream.dropped == 3

    async def drain() -> list[str]:
        stream.close()
        return [e.name async for e in stream]

    assert run(drain()) == ["e3", "e4"]


def test_callback_that_raises_does_not_stop_the_endpoint() -> None:
    seen: list[InterfaceEvent] = []

    def callback(event: InterfaceEvent) -> None:
        seen.append(event)
        raise RuntimeError("application bug")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        errors: list[object] = []
        loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx.get("exception")))
        ep = MulticastEndpoint(
            "239.255.9.9",
            5999,
            snapshot_source=lambda: (),
            netlink=False,
            on_interface_event=callback,
        )
        await ep.start()
        ep._engine.emit([InterfaceEvent("removed", "eth1", 3, ())])
        await wait_for(lambda: bool(errors))
        assert not ep.closed
        await ep.aclose()

    run(main())
    assert [e.kind for e in seen] == ["removed"]
