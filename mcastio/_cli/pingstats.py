"""The messages and the accounting of ``mcastio ping`` (after omping).

Pure: bytes and numbers in, numbers and text out. Every instance sends numbered
probes, to the group on every interface and by unicast to each peer it knows,
and answers each probe it hears the same way it came (a multicast probe with a
multicast answer out of the interface it arrived on, a unicast one by unicast),
echoing the prober's send time. A multicast round trip is multicast both ways,
so a link that drops multicast shows 100% loss there and nowhere else.

Message layout (network byte order, 28 bytes)::

    0  magic "MCPG"   4  version (1)   5  type (1 probe, 2 answer)
    6  kind (0 unicast, 1 multicast)   7  zero
    8  sender id (u32, random per run)  12 target id (u32; 0 in a probe)
    16 sequence number (u32)           20 the prober's send time (u64, ns)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .fmt import plural

__all__ = [
    "ANSWER",
    "MULTICAST",
    "NO_PEERS",
    "PROBE",
    "UNICAST",
    "Answer",
    "Message",
    "PingStats",
    "answer_line",
    "decode",
    "encode",
]

MAGIC = b"MCPG"
VERSION = 1
PROBE, ANSWER = 1, 2
UNICAST, MULTICAST = 0, 1
KIND_NAMES = {UNICAST: "unicast", MULTICAST: "multicast"}
_FORMAT = struct.Struct("!4sBBBBIIIQ")
#: Peers tracked at once; probes from more are not answered or counted.
MAX_PEERS = 256
SIZE = _FORMAT.size


@dataclass(frozen=True, slots=True)
class Message:
    type: int
    kind: int
    sender: int
    target: int
    seq: int
    sent_ns: int

    def answer(self, me: int) -> Message:
        """The answer to this probe, from ``me``."""
        return Message(ANSWER, self.kind, me, self.sender, self.seq, self.sent_ns)


def encode(msg: Message) -> bytes:
    return _FORMAT.pack(
        MAGIC, VERSION, msg.type, msg.kind, 0, msg.sender, msg.target, msg.seq, msg.sent_ns
    )


def decode(data: bytes) -> Message | None:
    """The message in ``data``, or ``None`` for anything else on the port."""
    if len(data) != SIZE or data[:4] != MAGIC:
        return None
    _magic, version, mtype, kind, _zero, sender, target, seq, sent_ns = _FORMAT.unpack(data)
    if version != VERSION or mtype not in (PROBE, ANSWER) or kind not in KIND_NAMES:
        return None
    return Message(mtype, kind, sender, target, seq, sent_ns)


@dataclass(frozen=True, slots=True)
class Answer:
    """An answer to one of our probes, as it arrived: one line of ping's output."""

    peer: str
    interface: str
    kind: int
    seq: int
    rtt_ns: int
    duplicate: bool


def answer_line(answer: Answer) -> str:
    """``10.0.1.2  eth1  multicast  seq=3  time=0.231 ms`` (omping prints one per probe)."""
    line = (
        f"{answer.peer:<15} {answer.interface:<8} {KIND_NAMES[answer.kind]:<9} "
        f"seq={answer.seq:<5} time={answer.rtt_ns / 1e6:.3f} ms"
    )
    return line + (" (DUP!)" if answer.duplicate else "")


class _Row:
    """Answers from one peer, on one interface, of one kind."""

    __slots__ = ("duplicates", "rtt_max", "rtt_min", "rtt_sum", "seen")

    def __init__(self) -> None:
        self.seen: set[int] = set()
        self.duplicates = 0
        self.rtt_min = self.rtt_max = self.rtt_sum = 0

    def add(self, seq: int, rtt_ns: int) -> bool:
        """Count an answer; False when it is a duplicate."""
        if seq in self.seen:
            self.duplicates += 1
            return False
        if not self.seen or rtt_ns < self.rtt_min:
            self.rtt_min = rtt_ns
        if not self.seen or rtt_ns > self.rtt_max:
            self.rtt_max = rtt_ns
        self.rtt_sum += rtt_ns
        self.seen.add(seq)
        return True


class Peer:
    """Another ping instance: known by address from the command line, or heard."""

    __slots__ = ("address", "first_seq", "id", "interfaces", "named", "unicast_sent")

    def __init__(self, address: str, peer_id: int | None, first_seq: int | None) -> None:
        self.address = address
        self.named = False
        #: (interface, seq) of the unicast probes sent to this peer.
        self.unicast_sent: list[tuple[str, int]] = []
        self.id = peer_id
        #: Probes from this number on are expected to be answered: the first one
        #: sent after the peer was heard (it was running by then). ``None``
        #: until heard.
        self.first_seq = first_seq
        #: Interfaces this peer is expected on, in the order learnt.
        self.interfaces: list[str] = []


class PingStats:
    """What was sent, and which answers came back, per peer, interface and kind."""

    __slots__ = ("me", "peers", "rows", "sent_multicast", "seq")

    def __init__(self, me: int) -> None:
        self.me = me
        self.seq = 0
        self.peers: list[Peer] = []
        self.rows: dict[tuple[int, str, int], _Row] = {}
        #: Interface -> sequence numbers of the multicast probes sent out of it.
        self.sent_multicast: dict[str, list[int]] = {}

    # -- peers -------------------------------------------------------------------

    def add_peer(self, address: str, interface: str | None) -> Peer:
        """A peer named on the command line, expected on ``interface`` if known."""
        peer = Peer(address, None, None)
        peer.named = True
        if interface is not None:
            peer.interfaces.append(interface)
        self.peers.append(peer)
        return peer

    def heard(self, sender: int, address: str, interface: str) -> Peer | None:
        """Note a message from ``sender`` at ``address`` on ``interface``; the peer."""
        if sender == self.me:
            return None
        peer = next((p for p in self.peers if p.id == sender), None)
        named = next((p for p in self.peers if p.id is None and p.address == address), None)
        if peer is not None and named is not None:
            # Heard first from another address (an IPv6 link-local source), now
            # from the one named on the command line: one peer, under that name.
            self._merge(peer, named)
            peer = named
        elif peer is None:
            peer = named
            if peer is None:
                if len(self.peers) >= MAX_PEERS:
                    return None  # the table is fed from the network: keep it bounded
                peer = Peer(address, sender, None)
                self.peers.append(peer)
        peer.id = sender
        if peer.first_seq is None:
            peer.first_seq = self.seq
        if interface not in peer.interfaces:
            peer.interfaces.append(interface)
        return peer

    def _merge(self, heard: Peer, named: Peer) -> None:
        named.first_seq = heard.first_seq
        named.interfaces += [i for i in heard.interfaces if i not in named.interfaces]
        # Probed at both addresses while it seemed two peers: one peer had one probe
        # of each number per interface (its answers count once per number too).
        sent = dict.fromkeys(named.unicast_sent + heard.unicast_sent)
        named.unicast_sent = sorted(sent, key=lambda probe: probe[1])
        self.peers.remove(heard)

    # -- probes and answers --------------------------------------------------------

    def next_seq(self) -> int:
        seq = self.seq
        self.seq += 1
        return seq

    def sent(self, kind: int, interface: str, seq: int, peer: Peer | None = None) -> None:
        if kind == MULTICAST:
            self.sent_multicast.setdefault(interface, []).append(seq)
        elif peer is not None:
            peer.unicast_sent.append((interface, seq))

    def answered(self, peer: Peer, interface: str, msg: Message, now_ns: int) -> Answer | None:
        """Count an answer to one of our probes, arrived on ``interface``; what it was."""
        if msg.target != self.me or msg.seq >= self.seq or peer.id is None:
            return None  # not ours, or a number never sent: nothing to count
        key = (peer.id, interface, msg.kind)
        row = self.rows.get(key)
        if row is None:
            row = self.rows[key] = _Row()
        rtt = now_ns - msg.sent_ns
        new = row.add(msg.seq, rtt)
        return Answer(peer.address, interface, msg.kind, msg.seq, rtt, not new)

    def finished(self, count: int) -> bool:
        """Whether every peer heard has had ``count`` probes since it was heard.

        A peer that started a little later than this one missed the first probe
        or two, through no fault of the network; probing goes on until it has
        had its ``count`` (omping waits for each peer the same way), so SENT is
        the count asked for.
        """
        return all(p.first_seq is None or self.seq - p.first_seq >= count for p in self.peers)

    # -- results -------------------------------------------------------------------

    def results(self, count: int | None = None) -> list[dict[str, object]]:
        """One entry per peer, interface and kind, peers in the order known.

        With ``count``, each peer's probes are the ``count`` sent from the one it
        was heard at: the same SENT for every peer, however late it started.
        """
        out: list[dict[str, object]] = []
        for peer in self.peers:
            first = 0 if peer.first_seq is None else peer.first_seq
            end = first + count if count is not None else self.seq
            unicast_ifs = [i for i, s in peer.unicast_sent if first <= s < end]
            names = list(peer.interfaces)
            names += [i for i in dict.fromkeys(unicast_ifs) if i not in names]
            for name in names:
                for kind in (UNICAST, MULTICAST):
                    if kind == MULTICAST:
                        sent = sum(first <= s < end for s in self.sent_multicast.get(name, []))
                    else:
                        sent = unicast_ifs.count(name)
                    row = self.rows.get((peer.id or 0, name, kind), _Row())
                    received = sum(first <= s < end for s in row.seen) if sent else 0
                    out.append(_entry(peer, name, kind, sent, received, row))
        return out


def _entry(
    peer: Peer, name: str, kind: int, sent: int, received: int, row: _Row
) -> dict[str, object]:
    rtt = None
    if row.seen:
        avg = row.rtt_sum / len(row.seen)
        rtt = {
            "min": round(row.rtt_min / 1e6, 3),
            "avg": round(avg / 1e6, 3),
            "max": round(row.rtt_max / 1e6, 3),
        }
    loss = 100.0 * (sent - received) / sent if sent else None
    return {
        "peer": peer.address,
        "interface": name,
        "kind": KIND_NAMES[kind],
        "sent": sent,
        "received": received,
        "loss_percent": None if loss is None else round(max(loss, 0.0), 1),
        "duplicates": row.duplicates,
        "rtt_ms": rtt,
    }


def table(results: list[dict[str, object]]) -> str:
    """The results for a terminal: a line per peer, a row per interface and kind."""
    lines = [
        f"{'PEER / INTERFACE':<18}{'KIND':<10}{'SENT':>6}{'RECV':>6}{'LOSS':>6}"
        f"{'DUP':>5}  RTT MIN/AVG/MAX ms"
    ]
    peer = None
    for r in results:
        if r["peer"] != peer:
            peer = r["peer"]
            lines.append(str(peer))
        loss = "-" if r["loss_percent"] is None else f"{r['loss_percent']:.0f}%"
        rtt = r["rtt_ms"]
        times = (
            "-"
            if not isinstance(rtt, dict)
            else "/".join(f"{rtt[k]:.3f}" for k in ("min", "avg", "max"))
        )
        lines.append(
            f"  {r['interface']!s:<16}{r['kind']!s:<10}{r['sent']:>6}{r['received']:>6}"
            f"{loss:>6}{r['duplicates']:>5}  {times}"
        )
    if peer is None:
        lines.append("(no peer answered or was named)")
    return "\n".join(lines)


def broken(results: list[dict[str, object]]) -> list[str]:
    """'multicast to 10.0.0.2 on eth1' for every row where nothing came back."""
    return [
        f"{r['kind']} to {r['peer']} on {r['interface']}"
        for r in results
        if isinstance(r["sent"], int) and r["sent"] > 0 and r["received"] == 0
    ]


#: What ping says when no peer answered and none was named.
NO_PEERS = "no peer answered: is 'mcastio ping' running on the other hosts?"


def summary_line(results: list[dict[str, object]]) -> str:
    bad = broken(results)
    peers = len({r["peer"] for r in results})
    if not results:
        return NO_PEERS
    if not bad:
        return f"all answered: {plural(peers, 'peer')}"
    return "NO ANSWER: " + "; ".join(bad)
