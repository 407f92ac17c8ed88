"""A small mDNS responder on every link: a host name and one service, IPv4 and IPv6.

Usage::

    python examples/mdns_responder.py [--name NAME] [--service TYPE] [--port P] [--instance I]
    sudo python examples/mdns_responder.py --lab    # in a namespace lab, never on your network

It answers, on each link, with that link's own addresses:

- ``NAME.local`` A and AAAA: the addresses of the interface the query came in on;
- ``_services._dns-sd._udp.local`` PTR -> ``TYPE.local``; ``TYPE.local`` PTR ->
  ``INSTANCE.TYPE.local``, which has SRV (``NAME.local``, ``P``) and TXT records.

A query from port 5353 is answered by multicast out of the interface it came in
on (or by unicast when its question asks for it, the QU bit, RFC 6762 §5.4). A
query from any other port is a *legacy unicast* query (RFC 6762 §6.7): it is
answered by unicast to the querier's address and port, from port 5353, with the
query's ID and questions repeated and TTLs of at most 10 s. Both use one mcastio
endpoint with ``source_port="group"``: ``ep.answer(dgram, ...)`` sends out of the
arrival interface from 5353, and refuses a querier that is not on that link.

Not done, as a small example: probing and announcing (RFC 6762 §8), known-answer
suppression and the one-second multicast rate limit. ``--lab`` runs it in a
:class:`mcastio.testing.Lab` and asks it from each peer with a legacy query.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import socket
import struct
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import mcastio

MDNS_V4, MDNS_V6, MDNS_PORT = "224.0.0.251", "ff02::fb", 5353
A, PTR, TXT, AAAA, SRV, ANY = 1, 12, 16, 28, 33, 255
CLASS_IN, CACHE_FLUSH, UNICAST_RESPONSE = 1, 0x8000, 0x8000
HOST_TTL, SERVICE_TTL, LEGACY_TTL = 120, 4500, 10
SERVICES = "_services._dns-sd._udp.local"

_log = logging.getLogger("mdns_responder")


@dataclass(frozen=True)
class Question:
    name: str  # lower case, without the trailing dot
    qtype: int
    unicast: bool  # the QU bit


@dataclass(frozen=True)
class Query:
    id: int
    questions: tuple[Question, ...]
    raw_questions: bytes  # repeated verbatim in a legacy unicast answer


def encode_name(name: str) -> bytes:
    labels = [p.encode() for p in name.rstrip(".").split(".")]
    return b"".join(bytes([len(p)]) + p for p in labels) + b"\0"


def _read_name(data: bytes, pos: int) -> tuple[str, int]:
    labels: list[str] = []
    end = -1
    for _ in range(128):  # bounds a pointer loop in a hostile packet
        length = data[pos]
        if length & 0xC0 == 0xC0:
            end = pos + 2 if end < 0 else end
            pos = struct.unpack_from("!H", data, pos)[0] & 0x3FFF
        elif length == 0:
            return ".".join(labels), (end if end >= 0 else pos + 1)
        else:
            labels.append(data[pos + 1 : pos + 1 + length].decode("utf-8", "replace"))
            pos += 1 + length
    raise ValueError("name compression loop")


def parse_query(data: bytes) -> Query | None:
    """The questions of a standard query; None for a response or a malformed packet."""
    try:
        qid, flags, qdcount = struct.unpack_from("!3H", data)
        if flags & 0xF800:  # a response (QR) or an opcode other than QUERY
            return None
        pos, questions = 12, []
        for _ in range(qdcount):
            name, pos = _read_name(data, pos)
            qtype, qclass = struct.unpack_from("!HH", data, pos)
            pos += 4
            if qclass & 0x7FFF in (CLASS_IN, 255):
                questions.append(Question(name.lower(), qtype, bool(qclass & UNICAST_RESPONSE)))
    except (struct.error, IndexError, ValueError):
        return None
    return Query(qid, tuple(questions), data[12:pos])


def _record(name: str, rtype: int, ttl: int, rdata: bytes, unique: bool, legacy: bool) -> bytes:
    # The cache-flush bit marks a record only this host owns; never in a legacy answer.
    rclass = CLASS_IN | (CACHE_FLUSH if unique and not legacy else 0)
    ttl = min(ttl, LEGACY_TTL) if legacy else ttl
    return encode_name(name) + struct.pack("!HHIH", rtype, rclass, ttl, len(rdata)) + rdata


class Zone:
    """The records of one host name and one service, answered per interface."""

    def __init__(
        self, host: str, service: str, instance: str, port: int, txt: Sequence[str]
    ) -> None:
        self.host = f"{host}.local".lower()
        self.service = f"{service}.local".lower()
        self.instance = f"{instance}.{service}.local"
        self.port = port
        self.txt = b"".join(bytes([len(t.encode())]) + t.encode() for t in txt) or b"\0"

    def answers(self, q: Question, iface: mcastio.Interface, legacy: bool) -> list[bytes]:
        """The records answering ``q`` on ``iface``: its own addresses only."""
        out: list[bytes] = []

        def want(rtype: int) -> bool:
            return q.qtype in (rtype, ANY)

        if q.name == self.host:
            if want(A):
                out += [
                    _record(self.host, A, HOST_TTL, a.ip.packed, True, legacy) for a in iface.ipv4
                ]
            if want(AAAA):
                out += [
                    _record(self.host, AAAA, HOST_TTL, a.ip.packed, True, legacy)
                    for a in iface.ipv6
                ]
        elif q.name == SERVICES and want(PTR):
            out.append(
                _record(SERVICES, PTR, SERVICE_TTL, encode_name(self.service), False, legacy)
            )
        elif q.name == self.service and want(PTR):
            rdata = encode_name(self.instance)
            out.append(_record(self.service, PTR, SERVICE_TTL, rdata, False, legacy))
        elif q.name == self.instance.lower():
            if want(SRV):
                srv = struct.pack("!3H", 0, 0, self.port) + encode_name(self.host)
                out.append(_record(self.instance, SRV, HOST_TTL, srv, True, legacy))
            if want(TXT):
                out.append(_record(self.instance, TXT, SERVICE_TTL, self.txt, True, legacy))
        return out

    def additionals(self, q: Question, iface: mcastio.Interface, legacy: bool) -> list[bytes]:
        """What a querier asks next (RFC 6763 §12): SRV, TXT and addresses for a PTR."""
        if q.name != self.service or q.qtype not in (PTR, ANY):
            return []
        out: list[bytes] = []
        for qtype, name in ((SRV, self.instance.lower()), (TXT, self.instance.lower())):
            out += self.answers(Question(name, qtype, False), iface, legacy)
        for qtype in (A, AAAA):
            out += self.answers(Question(self.host, qtype, False), iface, legacy)
        return out


def build_response(
    zone: Zone, query: Query, iface: mcastio.Interface, legacy: bool
) -> bytes | None:
    answers: list[bytes] = []
    extra: list[bytes] = []
    for q in query.questions:
        answers += zone.answers(q, iface, legacy)
        extra += zone.additionals(q, iface, legacy)
    if not answers:
        return None
    extra = [r for r in extra if r not in answers]
    # AA set; a legacy answer echoes the ID and the questions (RFC 6762 §6.7).
    qid, qd = (query.id, len(query.questions)) if legacy else (0, 0)
    header = struct.pack("!6H", qid, 0x8400, qd, len(answers), 0, len(extra))
    return header + (query.raw_questions if legacy else b"") + b"".join(answers + extra)


async def serve(zone: Zone, ep: mcastio.DualStackEndpoint, sub: mcastio.Subscription) -> None:
    """Answer every query ``sub`` (a subscription of ``ep``) delivers until cancelled."""
    async for dgram in sub:
        query = parse_query(dgram.data)
        if query is None or not query.questions:
            continue
        family_ep = ep.ipv6 if ":" in dgram.source[0] else ep.ipv4
        if family_ep is None:
            continue
        # The interface as the endpoint sees it now: its addresses go into the answer.
        iface = next((i for i in family_ep.interfaces if i.name == dgram.interface), None)
        if iface is None:
            continue
        legacy = dgram.source[1] != MDNS_PORT
        response = build_response(zone, query, iface, legacy)
        if response is None:
            continue
        try:
            if legacy or all(q.unicast for q in query.questions):
                await ep.answer(dgram, response)
            else:
                await family_ep.send(response, interface=dgram.interface)
        except mcastio.NotOnLinkError as exc:
            _log.warning("not answering %s: %s", dgram.source[0], exc)
        except mcastio.MulticastError as exc:
            _log.warning("answer on %s failed: %s", dgram.interface, exc)


async def run(zone: Zone, *, interfaces: Sequence[str] | None = None) -> None:
    async with mcastio.DualStackEndpoint(
        MDNS_V4, MDNS_V6, MDNS_PORT, source_port="group", interfaces=interfaces
    ) as ep:
        # Subscribed before "ready": a query arriving earlier would not be kept.
        task = asyncio.ensure_future(serve(zone, ep, ep.subscribe()))
        names = ",".join(sorted({i.name for e in (ep.ipv4, ep.ipv6) if e for i in e.interfaces}))
        print(f"ready {zone.host} {zone.instance} on {names}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _lab_demo(zone: Zone, args: argparse.Namespace) -> int:
    """Run the responder in a lab's host; each peer asks it with a legacy A query."""
    import subprocess

    from mcastio.testing import Lab

    argv = [sys.executable, __file__, "--name", zone.host.removesuffix(".local")]
    with Lab(links=2) as lab:
        proc = lab.popen(lab.host, *argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert proc.stdout is not None
        print(proc.stdout.readline().decode().strip())
        question = encode_name(zone.host) + struct.pack("!HH", A, CLASS_IN)
        query = struct.pack("!6H", 0x1234, 0, 1, 0, 0, 0) + question
        for link in lab.link:
            with lab.inside(link.peer_ns):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            with sock:
                sock.settimeout(2)
                sock.setsockopt(
                    socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(link.peer_addr)
                )
                sock.sendto(query, (MDNS_V4, MDNS_PORT))
                data, source = sock.recvfrom(2048)
            address = socket.inet_ntoa(data[-4:])
            print(f"{link.peer_if} asked {zone.host}: {address} (from {source[0]}:{source[1]})")
        proc.terminate()
        proc.wait(5)
        proc.stdout.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default=socket.gethostname().split(".")[0])
    parser.add_argument("--service", default="_mcastio-demo._udp")
    parser.add_argument("--instance", default="mcastio demo")
    parser.add_argument("--port", type=int, default=9)
    parser.add_argument("--txt", action="append", default=[])
    parser.add_argument("--interface", action="append", dest="interfaces")
    parser.add_argument("--lab", action="store_true", help="run in a namespace lab (root)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    zone = Zone(args.name, args.service, args.instance, args.port, args.txt or ["path=/"])
    if args.lab:
        return _lab_demo(zone, args)
    asyncio.run(run(zone, interfaces=args.interfaces))
    return 0


if __name__ == "__main__":
    sys.exit(main())
