"""The relay's decisions, pure: rate limits, the duplicate window, hold-down and answers.

No sockets, no asyncio: every method takes the clock (``now``, in seconds) as an
argument, so the rules are tested with hypothesis in microseconds. docs/how-to/relay.md
says why these rules and what they cannot do.
"""

from __future__ import annotations

import hashlib
import heapq
import ipaddress
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = [
    "DuplicateWindow",
    "HoldDown",
    "PendingTable",
    "RateLimiter",
    "TokenBucket",
    "datagram_key",
    "hold_delay",
]

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)

#: Hold-down slots and their spacing: a relay waits BASE + slot * STEP before it
#: forwards, so of two relays on one link the one with the lower slot sends first
#: and the other hears its copy and cancels. BASE is half a STEP: copies that
#: reach a link over one hop and over two never become due at the same moment.
SLOTS = 8
STEP = 0.02
BASE = STEP / 2


def datagram_key(group: str, port: int, data: bytes) -> bytes:
    """What identifies one original datagram and every relayed copy of it."""
    digest = hashlib.blake2b(data, digest_size=16, person=b"mcastio-relay")
    digest.update(f"{group}/{port}".encode())
    return digest.digest()


def hold_delay(address: str | None, slot: int | None = None) -> float:
    """How long a relay holds a copy before sending it from ``address``.

    The slot is the address modulo :data:`SLOTS` unless given: two relays whose
    addresses on a link differ modulo 8 never send at the same moment there.
    """
    if slot is None:
        slot = int(ipaddress.ip_address(address)) % SLOTS if address else 0
    if not 0 <= slot < SLOTS:
        raise ValueError(f"slot must be 0..{SLOTS - 1}, not {slot}")
    return BASE + slot * STEP


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved; one token per datagram."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"a rate limit needs rate > 0 and burst >= 1, not {rate}, {burst}")
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def refill(self, now: float) -> None:
        # A clock that steps back (a test, a VM) never takes tokens away.
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now

    def take(self, now: float) -> bool:
        self.refill(now)
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class RateLimiter:
    """One bucket per source address and one per arrival link.

    Sources are remembered up to ``max_sources`` (least recently seen forgotten
    first): a flood of spoofed sources costs bounded memory, and is still held
    to the link's own limit.
    """

    def __init__(
        self,
        source_rate: float,
        source_burst: float,
        link_rate: float,
        link_burst: float,
        max_sources: int = 1024,
    ) -> None:
        # Checked once here, so a bad limit fails at construction, not on first use.
        TokenBucket(source_rate, source_burst, 0.0)
        TokenBucket(link_rate, link_burst, 0.0)
        self._source = (source_rate, source_burst)
        self._link = (link_rate, link_burst)
        self._max_sources = max_sources
        self._sources: OrderedDict[str, TokenBucket] = OrderedDict()
        self._links: dict[str, TokenBucket] = {}

    def check(self, source: str, link: str, now: float) -> str | None:
        """``None`` when the datagram may pass, else which limit stopped it."""
        bucket = self._sources.get(source)
        if bucket is None:
            bucket = self._sources[source] = TokenBucket(*self._source, now)
            if len(self._sources) > self._max_sources:
                self._sources.popitem(last=False)
        else:
            self._sources.move_to_end(source)
        if not bucket.take(now):
            return "source"
        link_bucket = self._links.get(link)
        if link_bucket is None:
            link_bucket = self._links[link] = TokenBucket(*self._link, now)
        if not link_bucket.take(now):
            return "link"
        return None


class DuplicateWindow:
    """Keys seen in the last ``window`` seconds, at most ``capacity`` of them."""

    def __init__(self, window: float, capacity: int = 65536) -> None:
        if window <= 0 or capacity < 1:
            raise ValueError("the duplicate window needs a positive length and capacity")
        self.window = window
        self._capacity = capacity
        # Insertion order is expiry order: every entry lives the same window.
        self._seen: OrderedDict[bytes, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def seen(self, key: bytes, now: float) -> bool:
        """Whether ``key`` was seen within the window; records it when it was not."""
        self._expire(now)
        if key in self._seen:
            return True
        self._seen[key] = now + self.window
        if len(self._seen) > self._capacity:
            self._seen.popitem(last=False)
        return False

    def _expire(self, now: float) -> None:
        seen = self._seen
        while seen:
            key, expiry = next(iter(seen.items()))
            if expiry > now:
                break
            del seen[key]


@dataclass(slots=True)
class _Held(Generic[T]):
    deadline: float
    key: bytes
    link: str
    item: T
    cancelled: bool = False

    def __lt__(self, other: _Held[T]) -> bool:
        return self.deadline < other.deadline


class HoldDown(Generic[T]):
    """Forwards waiting for their moment; hearing the same copy on the link cancels one."""

    def __init__(self, capacity: int = 4096) -> None:
        self._capacity = capacity
        self._heap: list[_Held[T]] = []
        self._by_key: dict[tuple[bytes, str], _Held[T]] = {}
        #: Forwards refused because the table was full.
        self.overflow = 0

    def __len__(self) -> int:
        return len(self._by_key)

    def hold(self, key: bytes, link: str, deadline: float, item: T) -> bool:
        """Send ``item`` on ``link`` at ``deadline`` unless ``key`` is heard there first."""
        if (key, link) in self._by_key:
            return False
        if len(self._by_key) >= self._capacity:
            self.overflow += 1
            return False
        held = _Held(deadline, key, link, item)
        self._by_key[(key, link)] = held
        heapq.heappush(self._heap, held)
        return True

    def heard(self, key: bytes, link: str) -> T | None:
        """A copy of ``key`` was seen on ``link``: the forward held for it is cancelled."""
        held = self._by_key.pop((key, link), None)
        if held is None:
            return None
        held.cancelled = True
        return held.item

    def due(self, now: float) -> list[tuple[str, T]]:
        """The (link, item) forwards whose deadline has come, oldest first."""
        out: list[tuple[str, T]] = []
        heap = self._heap
        while heap and (heap[0].cancelled or heap[0].deadline <= now):
            held = heapq.heappop(heap)
            if not held.cancelled:
                del self._by_key[(held.key, held.link)]
                out.append((held.link, held.item))
        return out

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap and heap[0].cancelled:
            heapq.heappop(heap)
        return heap[0].deadline if heap else None


class PendingTable(Generic[K, T]):
    """Requests whose answers are carried back: at most ``capacity``, each ``lifetime`` s.

    Full, the oldest entry makes room for the new one and is handed back to be
    released (a fresh request is more likely to be still waited on).
    """

    def __init__(self, capacity: int, lifetime: float) -> None:
        if capacity < 1 or lifetime <= 0:
            raise ValueError("the pending-request table needs capacity >= 1 and lifetime > 0")
        self.capacity = capacity
        self.lifetime = lifetime
        self._entries: OrderedDict[K, tuple[float, T]] = OrderedDict()
        #: Entries pushed out by newer requests before their time was up.
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K, now: float) -> T | None:
        found = self._entries.get(key)
        if found is None or found[0] <= now:
            return None
        return found[1]

    def renew(self, key: K, now: float) -> T | None:
        """The live entry for ``key``, its lifetime restarted; ``None`` if there is none."""
        value = self.get(key, now)
        if value is not None:
            self._entries[key] = (now + self.lifetime, value)
            self._entries.move_to_end(key)
        return value

    def pop(self, key: K) -> T | None:
        """Remove the entry for ``key`` (live or not); its value, for the caller to release."""
        found = self._entries.pop(key, None)
        return None if found is None else found[1]

    def add(self, key: K, value: T, now: float) -> list[T]:
        """Record ``value`` under ``key``; returns the values to release (replaced, evicted)."""
        released = self.expire(now)
        old = self._entries.pop(key, None)
        if old is not None:
            released.append(old[1])
        while len(self._entries) >= self.capacity:
            released.append(self._entries.popitem(last=False)[1][1])
            self.evicted += 1
        self._entries[key] = (now + self.lifetime, value)
        return released

    def expire(self, now: float) -> list[T]:
        """Remove and return the entries whose time is up."""
        out: list[T] = []
        entries = self._entries
        while entries:
            key, (expiry, value) = next(iter(entries.items()))
            if expiry > now:
                break
            del entries[key]
            out.append(value)
        return out

    def pop_all(self) -> list[T]:
        values = [value for _, value in self._entries.values()]
        self._entries.clear()
        return values

    def next_expiry(self) -> float | None:
        for expiry, _ in self._entries.values():
            return expiry
        return None
