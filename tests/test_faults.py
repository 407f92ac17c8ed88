"""Hostile input and faults that need no kernel: validation, the watcher, the readers.

The kernel-side faults (EMFILE, optmem_max, labels, flapping links) are in
test_faults_lab.py.
"""

from __future__ import annotations

import array
import asyncio
import gc
import ipaddress
import logging
import weakref

import pytest

from mcastio import InterfaceEvent, MulticastEndpoint, MulticastError
from mcastio._discovery import fold_labels
from mcastio._model import Datagram, Interface, parse_group, validate_payload
from mcastio._options import MAX_QUEUE_SIZE
from mcastio._readers import Readers
from mcastio._receive import ReceivePath
from mcastio._watch import Backoff
from mcastio._watcher import Watcher
from tests.conftest import run, wait_for

GROUP = "239.255.11.1"
PORT = 5911


# -- item 5: bad input fails at the call that received it -----------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"queue_size": 10**30}, ValueError, f"queue_size must be an integer from 1 to {1 << 20}"),
        ({"queue_size": 0}, ValueError, "queue_size must be an integer"),
        ({"receive_buffer": 2**31}, ValueError, "receive_buffer must be a number of bytes"),
        ({"receive_buffer": 0}, ValueError, "receive_buffer must be"),
        ({"loopback": "no"}, TypeError, "loopback must be True or False, not 'no'"),
        ({"loopback": 1}, TypeError, "loopback must be True or False"),
        ({"watch": "yes"}, TypeError, "watch must be True or False"),
        ({"netlink": None}, TypeError, "netlink must be True or False"),
        ({"receive_ttl": "on"}, TypeError, "receive_ttl must be True or False"),
        ({"poll_interval": 1e-9}, ValueError, "poll_interval must be at least 0.05 seconds"),
        ({"poll_interval": float("inf")}, ValueError, "poll_interval must be at least"),
        ({"poll_interval": float("nan")}, ValueError, "poll_interval must be at least"),
        ({"poll_interval": "1"}, TypeError, "poll_interval must be a number"),
        ({"on_interface_event": "print"}, TypeError, "on_interface_event must be a callable"),
        ({"interfaces": b"e0"}, TypeError, "interfaces must be a list of str names"),
        ({"interfaces": [b"e0"]}, TypeError, "interface names must be str, not b'e0'"),
        ({"interfaces": 7}, TypeError, "interfaces must be a list of str names"),
        ({"interfaces": "e0"}, ValueError, "not the string 'e0'"),
        ({"interfaces": []}, ValueError, r"interfaces=\[\] selects no interface"),
        ({"interfaces": ()}, ValueError, r"interfaces=\[\] selects no interface"),
    ],
)
def test_bad_options_fail_in_the_constructor(
    kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        MulticastEndpoint(GROUP, PORT, **kwargs)  # type: ignore[arg-type]


def test_good_options_are_kept() -> None:
    ep = MulticastEndpoint(
        GROUP,
        PORT,
        interfaces=["e0", "e1"],
        queue_size=MAX_QUEUE_SIZE,
        receive_buffer=2**31 - 1,
        poll_interval=0.05,
        on_interface_event=print,
    )
    assert ep._engine.options.selector == ("e0", "e1")
    assert ep.watch_mode == "stopped"


@pytest.mark.parametrize(
    ("group", "match"),
    [
        ("ff02::1%nonexist", "must not carry a %zone"),
        ("ff02::1%e0", "must not carry a %zone"),
        ("ff00::1", "reserved scope 0"),
        ("ff0f::1", "reserved scope f"),
        ("ff10::1234", "reserved scope 0"),
        ("ff3f::8000:1", "reserved scope f"),
    ],
)
def test_zoned_and_reserved_scope_groups_are_refused(group: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_group(group)
    with pytest.raises(ValueError, match=match):
        MulticastEndpoint(group, PORT)


def test_unassigned_but_valid_scopes_are_kept() -> None:
    assert parse_group("ff06::1").scope == "scope-6"
    assert str(parse_group("ff05::1")) == "ff05::1"


def test_payloads_any_contiguous_buffer_is_a_datagram() -> None:
    group = parse_group(GROUP)
    assert validate_payload(b"ab", group) == b"ab"
    ints = array.array("H", [1, 2, 3])
    view = validate_payload(ints, group)
    assert isinstance(view, memoryview)
    assert (view.nbytes, view.format, bytes(view)) == (6, "B", ints.tobytes())
    with pytest.raises(ValueError, match="non-contiguous buffer"):
        validate_payload(memoryview(b"abcdef")[::2], group)
    with pytest.raises(TypeError, match=r"bytes-like object .* not str"):
        validate_payload("text", group)
    with pytest.raises(ValueError, match="65508 bytes exceeds"):
        validate_payload(array.array("B", bytes(65508)), group)


# -- item 2: the watcher never dies of a MulticastError, and says when it stopped -------


def test_watcher_retries_a_multicast_error_with_backoff(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []

    def reconcile(_reannounce: frozenset[int]) -> bool:
        calls.append(1)
        if len(calls) == 1:
            raise OSError(24, "Too many open files")
        if len(calls) < 4:
            raise MulticastError("cannot open a transmit socket on e1: [Errno 24] EMFILE")
        return True

    async def main() -> str:
        w = Watcher(
            reconcile,
            netlink=False,
            poll_interval=3600,
            debounce=0,
            backoff=Backoff(first=0.001, cap=0.004),
        )
        w.start(asyncio.get_running_loop())
        w.trigger()
        await wait_for(lambda: len(calls) >= 4)
        mode = w.mode
        await w.stop()
        return mode

    assert run(main()) == "poll"
    retried = [r for r in caplog.records if "will retry" in r.getMessage()]
    assert len(retried) == 3


def test_watch_mode_says_stopped_when_the_watcher_died_of_a_bug() -> None:
    def broken(_iface: Interface) -> bool:
        raise RuntimeError("application bug in the selector")

    async def main() -> tuple[str, str, list[object]]:
        reported: list[object] = []
        asyncio.get_running_loop().set_exception_handler(
            lambda _loop, ctx: reported.append(ctx.get("exception"))
        )
        ep = MulticastEndpoint(
            GROUP, PORT, interfaces=broken, snapshot_source=lambda: (), netlink=False
        )
        await ep.start()
        before = ep.watch_mode
        assert ep._engine.watcher is not None
        usable = Interface("e9", 99, ipv4=(ipaddress.IPv4Interface("10.9.9.1/24"),))
        ep._engine.snapshot_source = lambda: (usable,)
        ep._engine.watcher.trigger()
        await wait_for(lambda: ep.watch_mode != "poll")
        after = ep.watch_mode
        await ep.aclose()
        return before, after, reported

    before, after, reported = run(main())
    assert (before, after) == ("poll", "stopped")
    assert any(isinstance(exc, RuntimeError) for exc in reported)


def test_start_turns_an_unreadable_host_into_a_multicast_error() -> None:
    def source() -> tuple[Interface, ...]:
        raise OSError(24, "Too many open files")

    async def main() -> None:
        ep = MulticastEndpoint(GROUP, PORT, snapshot_source=source, watch=False)
        with pytest.raises(MulticastError, match=r"cannot read the interfaces: .*Too many"):
            await ep.start()
        await ep.aclose()

    run(main())


# -- item 1: a task waiting on a reader lives; an abandoned reader is released --------


def test_a_waiting_reader_is_held_and_an_abandoned_one_released() -> None:
    receive = ReceivePath(parse_group(GROUP), PORT)
    readers = Readers(receive, None)

    async def main() -> None:
        got: list[bytes] = []

        async def consume() -> None:
            async for dgram in readers.subscribe(8):
                got.append(dgram.data)

        task = weakref.ref(asyncio.create_task(consume()))
        abandoned = readers.subscribe(8)
        del abandoned
        await asyncio.sleep(0)
        gc.collect()
        # Only the waiting reader is left, and its task lives.
        assert readers.subscriptions == 1
        assert task() is not None
        receive.sinks[0]([Datagram(b"x", ("10.0.0.2", 1), GROUP, "e0")])
        await asyncio.sleep(0)
        assert got == [b"x"]
        readers.close()
        waited = task()
        assert waited is not None
        await waited

    run(main())


def test_an_unheld_task_on_interface_events_is_not_collected() -> None:
    async def main() -> list[InterfaceEvent]:
        seen: list[InterfaceEvent] = []
        snapshot: list[Interface] = []
        ep = MulticastEndpoint(GROUP, PORT, snapshot_source=lambda: tuple(snapshot), netlink=False)
        await ep.start()

        async def follow() -> None:
            async for event in ep.interface_events():
                seen.append(event)

        task = weakref.ref(asyncio.create_task(follow()))
        await asyncio.sleep(0)
        gc.collect()
        assert task() is not None
        ep._engine.readers.emit(GROUP, [InterfaceEvent("added", "e0", 9, ())], None)
        await asyncio.sleep(0)
        await ep.aclose()
        waited = task()
        if waited is not None:
            await waited
        return seen

    assert [e.name for e in run(main())] == ["e0"]


# -- item 6: closing many subscriptions is linear -------------------------------------


def test_closing_ten_thousand_subscriptions_rebuilds_the_sinks_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rebuilds: list[int] = []
    original = ReceivePath._rebuild_sinks

    def counted(self: ReceivePath) -> tuple[object, ...]:
        rebuilds.append(1)
        return original(self)

    monkeypatch.setattr(ReceivePath, "_rebuild_sinks", counted)
    receive = ReceivePath(parse_group(GROUP), PORT)
    readers = Readers(receive, None)
    subs = [readers.subscribe(4) for _ in range(10_000)]
    batch = [Datagram(b"x", ("10.0.0.2", 1), GROUP, "e0")]
    for sink in receive.sinks:
        sink(batch)
    for sub in subs[1:]:
        sub.close()
    assert len(receive.sinks) == 1
    for sink in receive.sinks:
        sink(batch)
    # One rebuild after the subscribes, one after the closes: not one per close.
    assert len(rebuilds) == 2
    assert readers.subscriptions == 1
    assert subs[0].queued == 2
    assert {s.queued for s in subs[1:]} == {0}
    readers.close()


def test_fold_labels_puts_labelled_addresses_on_their_device() -> None:
    indexes = {"e0": 2, "e0:0": 2, "e0:x": 2, "e1": 3, "odd": 7}
    assert fold_labels(indexes, {"e0", "e1"}) == {
        "e0": ["e0", "e0:0", "e0:x"],
        "e1": ["e1"],
        "odd": ["odd"],
    }


def test_backoff_is_logged_not_fatal_for_every_kernel_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="mcastio")
    # The same path as above, through the endpoint: a snapshot source that fails
    # with an OSError is retried (test_watcher.py), a MulticastError too.
    reads: list[int] = []

    def source() -> tuple[Interface, ...]:
        reads.append(1)
        if len(reads) > 1:
            raise MulticastError("netlink refused")
        return ()

    async def main() -> str:
        ep = MulticastEndpoint(GROUP, PORT, snapshot_source=source, netlink=False)
        await ep.start()
        assert ep._engine.watcher is not None
        ep._engine.watcher._backoff = Backoff(first=0.001, cap=0.002)
        ep._engine.watcher.trigger()
        await wait_for(lambda: len(reads) >= 4)
        mode = ep.watch_mode
        await ep.aclose()
        return mode

    assert run(main()) == "poll"
