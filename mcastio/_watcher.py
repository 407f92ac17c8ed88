"""The interface watcher: decides *when* an endpoint re-reads the host's interfaces.

On Linux an rtnetlink socket on the event loop wakes it on every link or address
change; elsewhere, or when netlink is refused, it polls. Each wake-up is only a
trigger: bursts are debounced and the endpoint then re-reads the whole truth, so
a lost or misread message can never leave it wrong for long.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Iterable

from ._errors import MulticastError
from ._model import Interface
from ._stream import BoundedStream
from ._turns import take_turn
from ._watch import Backoff, CarrierTracker, InterfaceEvent

__all__ = ["InterfaceEventStream", "Watcher"]

_log = logging.getLogger("mcastio")
# The longest a round waits for a burst of notifications to end (see Watcher._settle).
_SETTLE_AT_MOST = 0.5
# Datagrams read per wake-up of the loop: a link dump of a thousand links is some
# fifty of them (about 35 ms to parse), too long to hold the loop at once.
_READS_PER_CALL = 4

#: Called with the indexes whose carrier came back; returns False to be retried.
Reconcile = Callable[[frozenset[int]], bool]


class Watcher:
    """Run ``reconcile`` after every interface change (netlink) or every ``poll_interval``.

    ``clock`` gives the time in seconds that poll deadlines are computed from; it
    defaults to the event loop's clock.
    """

    def __init__(
        self,
        reconcile: Reconcile,
        *,
        netlink: bool = True,
        poll_interval: float = 1.0,
        debounce: float = 0.02,
        backoff: Backoff | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if not poll_interval > 0:
            raise ValueError(
                f"poll_interval must be a positive number of seconds, not {poll_interval!r}"
            )
        if not debounce >= 0:
            raise ValueError(f"debounce must be zero or more seconds, not {debounce!r}")
        self._reconcile = reconcile
        self._want_netlink = netlink
        self._poll_interval = float(poll_interval)
        self._debounce = float(debounce)
        self._backoff = backoff or Backoff()
        self._clock = clock
        self._carrier = CarrierTracker()
        self._reannounce: set[int] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sock: socket.socket | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        #: Reconciles run so far; lets tests and benchmarks wait for one more.
        self.rounds = 0
        #: Netlink notifications read so far (answers to the link dump not counted).
        self.notifications = 0
        #: Times notifications were lost (ENOBUFS), or the socket failed.
        self.losses = 0
        # A change seen before start(): the first round runs at once.
        self._early = False

    @property
    def mode(self) -> str:
        """``"netlink"``, ``"poll"`` or ``"stopped"`` (also once the task has ended)."""
        if self._task is None or self._task.done():
            return "stopped"
        return "netlink" if self._sock is not None else "poll"

    def seed(self, snapshot: Iterable[Interface]) -> None:
        """Tell the carrier tracker the state the endpoint started from."""
        self._carrier.seed(snapshot)

    def open(self) -> None:
        """Subscribe to netlink now, before the first snapshot is read, so no change
        between that read and :meth:`start` goes unnoticed."""
        if not self._want_netlink or self._sock is not None:
            return
        # Once refused, poll: start() calls this again and must not retry and re-log.
        self._want_netlink = False
        from ._platform import capabilities, unavailable

        caps = capabilities()
        if caps.watch != "netlink":
            reason = unavailable("the netlink watch", caps)
            _log.info("%s; polling every %gs", reason, self._poll_interval)
            return
        try:
            # Imported where used: rtnetlink exists on Linux only (AF_NETLINK). Inside
            # the try: a first import opens the source file and can meet EMFILE too.
            from ._platform.linux import netlink as _netlink

            self._sock = _netlink.open_listener()
            _netlink.request_links(self._sock)
        except OSError as exc:
            self._close_socket()
            _log.info("netlink unavailable (%s); polling every %gs", exc, self._poll_interval)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._task is not None:
            return
        self.open()
        self._loop = loop
        self._wake = asyncio.Event()
        if self._sock is not None:
            loop.add_reader(self._sock.fileno(), self._on_readable)
        if self._early:
            self._wake.set()
        self._task = loop.create_task(self._run(), name="mcastio-watcher")
        self._task.add_done_callback(self._on_done)

    def _on_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        # A bug (say, an interfaces= predicate that raises) ends the watching, not
        # the endpoint; report it where asyncio reports any failed callback.
        task.get_loop().call_exception_handler(
            {
                "message": "mcastio interface watcher stopped; interfaces are no longer followed",
                "exception": task.exception(),
                "task": task,
            }
        )

    def trigger(self) -> None:
        """Ask for a reconcile soon (after the debounce delay)."""
        if self._wake is not None:
            self._wake.set()
        else:
            self._early = True

    @property
    def subscribed(self) -> bool:
        """Whether a netlink socket tells this watcher of every change."""
        return self._sock is not None

    def read_now(self) -> None:
        """Read what the netlink socket holds now, without waiting for the loop to."""
        if self._sock is not None:
            from ._platform.linux import netlink as _netlink

            self._on_readable(_netlink.MAX_READS)

    async def catch_up(self, loop: asyncio.AbstractEventLoop) -> None:
        """:meth:`read_now` in pieces that give the loop its turns in between."""
        while self._sock is not None and self._on_readable(_READS_PER_CALL):
            await take_turn(loop)

    def _on_readable(self, reads: int = _READS_PER_CALL) -> bool:
        """Read up to ``reads`` datagrams; True if the socket may hold more.

        The loop calls it again while the socket is readable (level-triggered).
        """
        if self._sock is None:
            return False  # Closed by the round before, in the same pass of the loop.
        from ._platform.linux import netlink as _netlink  # imported already: the socket exists

        try:
            drained = _netlink.drain(self._sock, reads)
        except OSError as exc:
            _log.warning("netlink socket failed (%s); polling every %gs", exc, self._poll_interval)
            self.losses += 1
            self._close_socket()
            self.trigger()
            return False
        for link in drained.links:
            if self._carrier.update(
                link.index, link.carrier, carrier_ups=link.carrier_ups, deleted=link.deleted
            ):
                self._reannounce.add(link.index)
        if drained.lost:
            self.losses += 1
            _log.info("netlink notifications were lost; re-reading every interface")
        changes = drained.messages - drained.replies
        self.notifications += changes
        # The answers to the start's link dump describe the host the endpoints just
        # read: only notifications (or a carrier seen coming back) call for a round.
        if changes or drained.lost or self._reannounce:
            self.trigger()
        return drained.more

    def _now(self) -> float:
        if self._clock is not None:
            return self._clock()
        assert self._loop is not None
        return self._loop.time()

    async def _run(self) -> None:
        assert self._wake is not None
        wake = self._wake
        retry_at: float | None = None
        next_poll = self._now() + self._poll_interval
        while True:
            deadline = None if self._sock is not None else next_poll
            if retry_at is not None:
                deadline = retry_at if deadline is None else min(deadline, retry_at)
            if deadline is None:
                await wake.wait()
                woken = True
            else:
                woken = await _wait(wake, max(0.0, deadline - self._now()))
            if woken and self._debounce:
                await self._settle(wake)
            wake.clear()
            if self._sock is None and self._now() >= next_poll:
                next_poll = self._now() + self._poll_interval
            reannounce = frozenset(self._reannounce)
            self._reannounce.clear()
            try:
                ok = self._reconcile(reannounce)
            except (MulticastError, OSError) as exc:
                # A kernel refusal (out of descriptors, memory) is transient: retry.
                # OSError too, as the last line of defence of this background task.
                _log.warning("could not follow the interfaces, will retry: %s", exc)
                ok = False
            self.rounds += 1
            if ok:
                self._backoff.succeeded()
                retry_at = None
            else:
                retry_at = self._now() + self._backoff.failed()

    async def _settle(self, wake: asyncio.Event) -> None:
        """Let the rest of a burst (link up, then each address) arrive first.

        The round waits until the debounce passes with no new notification, so a
        storm (2,000 addresses from one ``ip -batch``) costs one round after it,
        not one every debounce during it; at most _SETTLE_AT_MOST, so a storm that
        never ends is still followed.
        """
        assert self._loop is not None
        give_up = self._loop.time() + _SETTLE_AT_MOST
        while True:
            wake.clear()
            await asyncio.sleep(self._debounce)
            if not wake.is_set() or self._loop.time() >= give_up:
                return

    def _close_socket(self) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        if self._loop is not None and self._task is not None:
            self._loop.remove_reader(sock.fileno())
        sock.close()

    def cancel(self) -> None:
        """Stop without waiting; :meth:`stop` also waits for the task to finish."""
        self._close_socket()
        if self._task is not None:
            self._task.cancel()

    async def stop(self) -> None:
        task, self._task = self._task, None
        self._close_socket()
        if task is None:
            return
        task.cancel()
        if task is not asyncio.current_task():
            # wait() neither raises the task's outcome nor swallows a cancellation
            # aimed at the caller (asyncio.timeout around aclose() must still work).
            await asyncio.wait({task})


async def _wait(event: asyncio.Event, timeout: float) -> bool:
    """Whether ``event`` was set within ``timeout`` seconds."""
    if event.is_set():
        return True
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except asyncio.TimeoutError:
        return False
    return True


class InterfaceEventStream(BoundedStream[InterfaceEvent]):
    """An async iterator of :class:`InterfaceEvent`, ending when the endpoint closes.

    At most ``queue_size`` events are kept; when the reader falls behind, the
    oldest are dropped (``dropped`` counts them), since the current state is
    always available from ``endpoint.interfaces``. After close, events already
    queued are still handed out before the iteration ends.
    """

    __slots__ = ()
    _DISCARD_ON_CLOSE = False

    def _push(self, event: InterfaceEvent) -> None:
        if not self._closed:
            self._feed([event])
