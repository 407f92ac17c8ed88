"""``Relay``: carry named groups between named interfaces, answers included, without loops.

Built on one :class:`MulticastEndpoint` per group and port, so it joins, sends and
follows link changes exactly as an endpoint does. The decisions (loops, rates,
duplicates, the pending requests) are in :mod:`._relayrules`; the sockets beyond
the endpoints in :mod:`._relayio`. docs/how-to/relay.md explains the rules and limits.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from socket import AF_INET, AF_INET6
from types import TracebackType

from ._discovery import read_snapshot
from ._endpoint import MulticastEndpoint
from ._errors import EndpointClosedError, MulticastError
from ._model import Datagram, Group, Interface, parse_group
from ._relayio import Address, AnswerSocket
from ._relayrules import (
    DuplicateWindow,
    HoldDown,
    PendingTable,
    RateLimiter,
    datagram_key,
    hold_delay,
)
from ._watch import InterfaceEvent

__all__ = ["Relay", "RelayStats"]

_log = logging.getLogger("mcastio")

#: The groups whose receivers may insist on TTL 255 (mDNS, RFC 6762 §11).
_TTL_255 = {"224.0.0.251", "ff02::fb"}
# Sources whose rate limiting was logged; forgotten when it grows past this.
_LOGGED_LIMIT = 256


@dataclass(frozen=True, slots=True)
class RelayStats:
    """Counters of one direction, ``source`` interface to ``destination``, over all groups."""

    source: str
    destination: str
    #: Datagrams sent on ``destination``.
    forwarded: int = 0
    #: Unicast answers to forwarded requests, carried back to requesters on ``source``.
    answers: int = 0
    #: Not forwarded by rule: over the size limit.
    dropped_rule: int = 0
    #: Not forwarded: over the per-source or the per-link rate limit.
    dropped_rate: int = 0
    #: Not forwarded by the loop check: sent by this host, a copy seen in the
    #: duplicate window, or a copy another relay sent on ``destination`` first.
    dropped_loop: int = 0
    #: Sends that failed (the interface was down or gone, a full buffer).
    failed: int = 0


_FIELDS = ("forwarded", "answers", "dropped_rule", "dropped_rate", "dropped_loop", "failed")


class _Target:
    """One group and port: its endpoint and its pending requests."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        group: Group,
        port: int,
        ttl: int,
        ep: MulticastEndpoint,
        pending: tuple[int, float],
        on_answer: Callable[[_Target, AnswerSocket, bytes], None],
    ) -> None:
        self.loop = loop
        self.group = group
        self.ttl = ttl
        self.group_str = str(group)
        self.port = port
        self.ep = ep
        self.pending: PendingTable[tuple[Address, str], AnswerSocket] = PendingTable(*pending)
        self._on_answer = on_answer

    def interface(self, name: str) -> Interface | None:
        for iface in self.ep.interfaces:
            if iface.name == name:
                return iface
        return None

    def send_request(self, dgram: Datagram, out: str) -> bool:
        """A request from a port of its own: the copy leaves from a socket that hears answers."""
        iface = self.interface(out)
        if iface is None:
            return False
        now = self.loop.time()
        key = (dgram.source, out)
        answer = self.pending.renew(key, now)
        if answer is not None and answer.iface != iface:
            # The link came back as a new device, or with a new address: a fresh socket.
            answer.close()
            self.pending.pop(key)
            answer = None
        if answer is None:
            try:
                answer = AnswerSocket(
                    self.loop,
                    self.group,
                    iface,
                    self.ttl,
                    dgram.source,
                    dgram.interface,
                    self._answered,
                )
            except MulticastError as exc:
                _log.warning("relay: cannot forward a request to %s: %s", out, exc)
                return False
            for old in self.pending.add(key, answer, now):
                old.close()
        return answer.send(dgram.data, (self.group_str, self.port)) is None

    def _answered(self, answer: AnswerSocket, data: bytes, source: Address) -> None:
        self._on_answer(self, answer, data)

    def answer_back(self, answer: AnswerSocket, data: bytes) -> bool:
        """Send an answer to its requester, out of the requester's link.

        From the endpoint's transmit socket there: the relay's own address on that
        link and the group's port, as a responder's legacy unicast answer would be.
        """
        host, port = answer.requester[:2]
        try:
            result = self.ep.send_to_nowait(data, host, port, interface=answer.arrival)
        except MulticastError as exc:
            # The requester's link is gone, or it moved off that link's prefixes.
            _log.debug("relay: answer to %s dropped: %s", host, exc)
            return False
        return result.ok

    def sweep(self) -> None:
        for answer in self.pending.expire(self.loop.time()):
            answer.close()

    async def aclose(self) -> None:
        for answer in self.pending.pop_all():
            answer.close()
        await self.ep.aclose()


class Relay:
    """Forward ``targets`` ((group, port) pairs) between ``interfaces`` (names, at least two).

    Every pair of interfaces both ways by default; ``directions`` narrows that to
    (from, to) pairs. Datagrams over ``max_size`` bytes are dropped, never cut;
    each source address may send ``source_rate`` a second (``source_burst`` at
    once) and each link ``link_rate`` (``link_burst``). A forward waits a few
    tens of ms (its hold-down slot, from this host's address on the outgoing link
    unless ``slot`` is given) and is cancelled if another relay's copy is heard
    there first; a datagram seen within ``window`` seconds is not forwarded again.
    Answers to requests are carried back for ``answer_timeout`` seconds, for at
    most ``max_pending`` (requester, link) pairs per group. See docs/how-to/relay.md.
    """

    def __init__(
        self,
        targets: Sequence[tuple[str, int]],
        interfaces: Sequence[str],
        *,
        directions: Sequence[tuple[str, str]] | None = None,
        ttl: int | None = None,
        max_size: int = 9000,
        source_rate: float = 50.0,
        source_burst: float = 100.0,
        link_rate: float = 500.0,
        link_burst: float = 1000.0,
        window: float = 0.8,
        slot: int | None = None,
        max_pending: int = 64,
        answer_timeout: float = 5.0,
    ) -> None:
        names = tuple(dict.fromkeys(interfaces))
        if isinstance(interfaces, str) or len(names) < 2:
            raise ValueError("a relay needs at least two interface names")
        if not targets:
            raise ValueError("a relay needs at least one group")
        if directions is None:
            directions = [(a, b) for a in names for b in names if a != b]
        outs: dict[str, list[str]] = {}
        for src, dst in directions:
            if src not in names or dst not in names:
                raise ValueError(f"direction {src} -> {dst} names an interface not relayed")
            if src == dst:
                raise ValueError(f"{src} -> {dst}: never forwarded back onto its own link")
            outs.setdefault(src, []).append(dst)
        if not outs:
            raise ValueError("a relay needs at least one direction")
        if max_size < 1:
            raise ValueError(f"max_size must be positive, not {max_size}")
        hold_delay(None, slot)  # checks the slot
        PendingTable(max_pending, answer_timeout)  # checks the table's bounds
        self._targets_spec = [(parse_group(g), _port(p)) for g, p in targets]
        self.interfaces = names
        self._outs = {k: tuple(v) for k, v in outs.items()}
        self._ttl = ttl
        self._max_size = max_size
        self._slot = slot
        self._pending_args = (max_pending, answer_timeout)
        self._rates = RateLimiter(source_rate, source_burst, link_rate, link_burst)
        self._dups = DuplicateWindow(window)
        self._held: HoldDown[tuple[_Target, Datagram]] = HoldDown()
        self._counts = {d: dict.fromkeys(_FIELDS, 0) for d in self._directions()}
        self._targets: list[_Target] = []
        self._own: frozenset[str] = frozenset()
        self._logged: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._state = "new"

    def _directions(self) -> list[tuple[str, str]]:
        return [(src, dst) for src, outs in self._outs.items() for dst in outs]

    @property
    def targets(self) -> tuple[tuple[str, int], ...]:
        return tuple((str(g), p) for g, p in self._targets_spec)

    @property
    def directions(self) -> tuple[tuple[str, str], ...]:
        return tuple(self._directions())

    @property
    def evicted(self) -> int:
        """Pending requests dropped from a full table before their time (their answers lost)."""
        return sum(t.pending.evicted for t in self._targets)

    @property
    def stats(self) -> tuple[RelayStats, ...]:
        """One entry per direction, in the order of :attr:`directions`."""
        return tuple(RelayStats(src, dst, **c) for (src, dst), c in self._counts.items())

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        """Join every group on every named interface and start forwarding."""
        if self._state == "closed":
            raise EndpointClosedError("this relay was closed; create a new one")
        if self._state == "open":
            return
        self._loop = loop = asyncio.get_running_loop()
        self._state = "open"
        try:
            self._refresh_own()
            for group, port in self._targets_spec:
                ttl = self._ttl if self._ttl is not None else (255 if str(group) in _TTL_255 else 1)
                ep = MulticastEndpoint(
                    str(group),
                    port,
                    interfaces=list(self.interfaces),
                    ttl=ttl,
                    source_port="group",
                    # Read at once: a copy heard must be seen before a held forward is due.
                    coalesce_delay=0,
                    on_interface_event=self._on_event,
                )
                target = _Target(loop, group, port, ttl, ep, self._pending_args, self._on_answer)
                self._targets.append(target)
                await ep.start()
                ep._add_sink(functools.partial(self._on_batch, target))
        except BaseException:
            await self.aclose()
            raise
        self._sweeper = loop.call_later(1.0, self._sweep)

    async def aclose(self) -> None:
        """Stop forwarding and release every socket. Idempotent."""
        self._state = "closed"
        for handle in (self._timer, self._sweeper):
            if handle is not None:
                handle.cancel()
        self._timer = self._sweeper = None
        for target in self._targets:
            await target.aclose()

    async def __aenter__(self) -> Relay:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        groups = " ".join(f"{g}:{p}" for g, p in self.targets)
        return f"<Relay {groups} {self._state} [{','.join(self.interfaces)}]>"

    # -- the host's own addresses ----------------------------------------------------

    def _refresh_own(self) -> None:
        try:
            snapshot = read_snapshot()
        except OSError as exc:
            _log.warning("cannot read the interfaces, keeping the last addresses: %s", exc)
            return
        own = {a for i in snapshot for f in (AF_INET, AF_INET6) for a in i.addresses(f)}
        self._own = frozenset(own)

    def _on_event(self, event: InterfaceEvent) -> None:
        self._refresh_own()

    # -- forwarding ----------------------------------------------------------------

    def _count(self, src: str, field: str, dst: str | None = None) -> None:
        for out in (dst,) if dst is not None else self._outs.get(src, ()):
            self._counts[(src, out)][field] += 1

    def _on_batch(self, target: _Target, batch: list[Datagram]) -> None:
        assert self._loop is not None
        now = self._loop.time()
        for dgram in batch:
            self._handle(target, dgram, now)
        self._arm()

    def _handle(self, target: _Target, dgram: Datagram, now: float) -> None:
        arrival = dgram.interface
        data = dgram.data
        key = datagram_key(target.group_str, target.port, data)
        # Heard here: whatever forward was held for this link, another sender did it.
        cancelled = self._held.heard(key, arrival)
        if cancelled is not None:
            self._count(cancelled[1].interface, "dropped_loop", arrival)
        if arrival not in self._outs:
            self._dups.seen(key, now)
            return
        source = dgram.source[0]
        if source in self._own:
            self._count(arrival, "dropped_loop")
            return
        if len(data) > self._max_size:
            self._count(arrival, "dropped_rule")
            return
        if self._dups.seen(key, now):
            self._count(arrival, "dropped_loop")
            return
        limit = self._rates.check(source, arrival, now)
        if limit is not None:
            self._count(arrival, "dropped_rate")
            self._log_limit(source, arrival, limit)
            return
        for out in self._outs[arrival]:
            iface = target.interface(out)
            if iface is None:
                self._count(arrival, "failed", out)
                continue
            delay = hold_delay(_address_on(iface), self._slot)
            if not self._held.hold(key, out, now + delay, (target, dgram)):
                # The hold-down table is full (a flood on many links at once).
                self._count(arrival, "failed", out)

    def _log_limit(self, source: str, arrival: str, limit: str) -> None:
        if source in self._logged:
            return
        if len(self._logged) >= _LOGGED_LIMIT:
            self._logged.clear()
        self._logged.add(source)
        what = "its link" if limit == "link" else "its source"
        _log.warning(
            "relay: %s on %s is over the rate limit of %s: dropping", source, arrival, what
        )

    def _arm(self) -> None:
        loop = self._loop
        deadline = self._held.next_deadline()
        if loop is None or deadline is None or self._state != "open":
            return
        if self._timer is not None:
            if self._timer.when() <= deadline:
                return
            self._timer.cancel()
        self._timer = loop.call_at(deadline, self._flush)

    def _flush(self) -> None:
        assert self._loop is not None
        self._timer = None
        for out, (target, dgram) in self._held.due(self._loop.time()):
            self._send(target, dgram, out)
        self._arm()

    def _send(self, target: _Target, dgram: Datagram, out: str) -> None:
        arrival = dgram.interface
        if dgram.source[1] == target.port:
            # From the group's port, as it came (mDNS needs 5353): answers, if any,
            # go to the group, and the endpoint carries them like any datagram.
            try:
                ok = target.ep.send_nowait(dgram.data, interface=out).ok
            except (ValueError, MulticastError):
                ok = False
        else:
            ok = target.send_request(dgram, out)
        self._count(arrival, "forwarded" if ok else "failed", out)

    def _on_answer(self, target: _Target, answer: AnswerSocket, data: bytes) -> None:
        back, out = answer.arrival, answer.out
        if len(data) > self._max_size:
            self._count(back, "dropped_rule", out)
            return
        ok = target.answer_back(answer, data)
        self._count(back, "answers" if ok else "failed", out)

    def _sweep(self) -> None:
        assert self._loop is not None
        for target in self._targets:
            target.sweep()
        self._sweeper = self._loop.call_later(1.0, self._sweep)


def _address_on(iface: Interface) -> str | None:
    """The address that picks this host's hold-down slot on ``iface``.

    The IPv4 address where there is one, for both families: an administrator
    chooses it (a link-local IPv6 address is derived from the MAC), and a relay
    then holds back for the same time in both.
    """
    addresses = iface.addresses(AF_INET) or iface.addresses(AF_INET6)
    return addresses[0] if addresses else None


def _port(port: object) -> int:
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise ValueError(f"port must be an integer from 1 to 65535, not {port!r}")
    return port
