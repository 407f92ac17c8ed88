"""Ask every link, IPv4 and IPv6, who answers an mDNS question, and print each answer.

Usage::

    python examples/mdns_browse.py [NAME ...] [--group-port] [--timeout S]
    sudo python examples/mdns_browse.py --lab      # in a namespace lab, never on your network

A NAME starting with ``_`` is asked for PTR records (service browsing), any other
for A and AAAA; the default is ``_services._dns-sd._udp.local``, which lists every
service type. ``--lab`` builds a :class:`mcastio.testing.Lab` with avahi-daemon
behind link 0 and a python-zeroconf responder behind link 1 (it needs root,
avahi-daemon and the zeroconf package) and asks them.

By default the query leaves each interface from a port of its own: a "legacy
unicast" query (RFC 6762 §6.7), which responders answer by unicast to that port.
mcastio delivers those answers as *replies*: ``Datagram.group`` is ``None`` and
``Datagram.interface`` is the link the answer came in on. With ``--group-port``
the query leaves from port 5353, as a full querier's does (RFC 6762 §11); the
answers then come by multicast and arrive as group traffic.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import secrets
import struct
import sys
import textwrap
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import mcastio

MDNS_V4, MDNS_V6, MDNS_PORT = "224.0.0.251", "ff02::fb", 5353
TYPES = {"A": 1, "PTR": 12, "TXT": 16, "AAAA": 28, "SRV": 33}
_TYPE_NAMES = {v: k for k, v in TYPES.items()}


@dataclass(frozen=True)
class Record:
    name: str
    type: str
    value: str


@dataclass(frozen=True)
class Answer:
    interface: str
    source: str
    reply: bool  # True: unicast to our port; False: multicast to the group
    record: Record


def build_query(questions: Sequence[tuple[str, str]], query_id: int = 0) -> bytes:
    """A DNS query with one question per (name, type)."""
    out = [struct.pack("!6H", query_id, 0, len(questions), 0, 0, 0)]
    for name, rtype in questions:
        labels = [p.encode() for p in name.rstrip(".").split(".")]
        out.append(b"".join(bytes([len(p)]) + p for p in labels) + b"\0")
        out.append(struct.pack("!HH", TYPES[rtype], 1))
    return b"".join(out)


def _name(data: bytes, pos: int) -> tuple[str, int]:
    """A possibly compressed name at ``pos``; returns it and the offset after it."""
    labels: list[str] = []
    end = -1
    for _ in range(128):  # bounds a pointer loop in a hostile packet
        length = data[pos]
        if length & 0xC0 == 0xC0:
            if end < 0:
                end = pos + 2
            pos = struct.unpack_from("!H", data, pos)[0] & 0x3FFF
            continue
        if length == 0:
            return ".".join(labels), (end if end >= 0 else pos + 1)
        labels.append(data[pos + 1 : pos + 1 + length].decode("utf-8", "replace"))
        pos += 1 + length
    raise ValueError("name compression loop")


def parse_answers(data: bytes) -> list[Record] | None:
    """The answer and additional records of a DNS response; None for a query."""
    try:
        _qid, flags, qd, an, ns, ar = struct.unpack_from("!6H", data)
        if not flags & 0x8000:
            return None
        pos = 12
        for _ in range(qd):
            pos = _name(data, pos)[1] + 4
        records = []
        for i in range(an + ns + ar):
            name, pos = _name(data, pos)
            rtype, _cls, _ttl, size = struct.unpack_from("!HHIH", data, pos)
            pos += 10
            rdata = data[pos : pos + size]
            if rtype == 1 and size == 4:
                value = str(ipaddress.IPv4Address(rdata))
            elif rtype == 28 and size == 16:
                value = str(ipaddress.IPv6Address(rdata))
            elif rtype == 12:
                value = _name(data, pos)[0]
            elif rtype == 33 and size >= 7:
                priority, weight, port = struct.unpack_from("!HHH", data, pos)
                value = f"{_name(data, pos + 6)[0]}:{port} (priority {priority}, weight {weight})"
            elif rtype == 16:
                value = txt_text(rdata)
            else:
                value = rdata.hex()
            if i < an or i >= an + ns:
                records.append(Record(name, _TYPE_NAMES.get(rtype, str(rtype)), value))
            pos += size
        return records
    except (struct.error, IndexError, ValueError):
        return None


def txt_text(rdata: bytes) -> str:
    """TXT strings (RFC 6763 §6: key=value pairs) as ``'path=/' 'v=1'``, not hex."""
    strings, pos = [], 0
    while pos < len(rdata):
        length = rdata[pos]
        strings.append(rdata[pos + 1 : pos + 1 + length].decode("utf-8", "replace"))
        pos += 1 + length
    shown = [repr(s) for s in strings if s]
    return " ".join(shown) or "(empty)"


def questions_for(names: Sequence[str]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for name in names:
        out += [(name, "PTR")] if name.startswith("_") else [(name, "A"), (name, "AAAA")]
    return out


async def browse(
    names: Sequence[str],
    *,
    timeout: float = 2.0,
    source_port: str = "ephemeral",
    interfaces: Sequence[str] | None = None,
    resend: float = 0.5,
) -> list[Answer]:
    """Ask ``names`` on every interface and both families; every answer seen in ``timeout``.

    The query is repeated every ``resend`` seconds, as queriers do: a responder
    stays silent if it multicast the same record within the last second.
    """
    query = build_query(questions_for(names), secrets.randbelow(0x10000))
    answers: list[Answer] = []
    async with mcastio.DualStackEndpoint(
        MDNS_V4, MDNS_V6, MDNS_PORT, interfaces=interfaces, source_port=source_port
    ) as ep:
        sub = ep.subscribe()  # before sending: answers arriving earlier are not kept

        async def collect() -> None:
            async for dgram in sub:
                records = parse_answers(dgram.data)
                for record in records or ():
                    answers.append(Answer(dgram.interface, dgram.source[0], dgram.is_reply, record))

        reader = asyncio.ensure_future(collect())
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while loop.time() < deadline:
                await ep.send_all(query)
                await asyncio.sleep(min(resend, max(0.0, deadline - loop.time())))
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            sub.close()
    return answers


def report(answers: Sequence[Answer]) -> Iterator[str]:
    seen = set()
    for a in answers:
        key = (a.interface, a.source, a.record)
        if key in seen:
            continue
        seen.add(key)
        how = "reply" if a.reply else "group"
        r = a.record
        line = f"{a.interface:<8} {how:<5} {a.source:<28} {r.type:<4} {r.name} -> {r.value}"
        if len(line) <= 80:
            yield line
            continue
        # Within 80 columns: the value (a long name, an SRV, TXT strings) under it.
        yield f"{a.interface:<8} {how:<5} {a.source:<28} {r.type:<4} {r.name}"[:80]
        yield from textwrap.wrap(
            f"-> {r.value}", 80, initial_indent="    ", subsequent_indent="       "
        )


def _in_lab(names: list[str], args: argparse.Namespace) -> list[Answer]:
    from mcastio.testing import Lab
    from mcastio.testing.responders import Avahi, ZeroconfResponder

    with Lab(links=2) as lab:
        a, z = lab.link
        addresses = [z.peer_addr, z.peer_addr6 or ""]
        with (
            Avahi(lab, a.peer_ns, [a.peer_if], "peer0"),
            ZeroconfResponder(lab, z.peer_ns, "peer1", addresses),
            lab.inside(),
        ):
            names = [*names, "peer0.local", "peer1.local"]
            return asyncio.run(browse(names, timeout=args.timeout, source_port=args.source_port))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=["_services._dns-sd._udp.local"])
    parser.add_argument("--timeout", type=float, default=2.0)
    parser.add_argument(
        "--group-port",
        dest="source_port",
        action="store_const",
        const="group",
        default="ephemeral",
        help="query from port 5353: answers come by multicast",
    )
    parser.add_argument("--lab", action="store_true", help="run in a namespace lab (root)")
    args = parser.parse_args(argv)
    if args.lab:
        from mcastio.testing import lab_support
        from mcastio.testing.responders import responder_support

        # Said before anything is built: a missing package is not a traceback.
        why = lab_support() or responder_support()
        if why is not None:
            print(f"mdns_browse: --lab cannot run here: {why}", file=sys.stderr)
            return 2
        answers = _in_lab(list(args.names), args)
    else:
        answers = asyncio.run(
            browse(args.names, timeout=args.timeout, source_port=args.source_port)
        )
    for line in report(answers):
        print(line)
    return 0 if answers else 1


if __name__ == "__main__":
    sys.exit(main())
