"""``mcastio send``: send datagrams out of every interface, paced, numbered if asked."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import secrets
import stat
import sys
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import BinaryIO, TextIO

from .._discovery import read_snapshot
from .._endpoint import MulticastEndpoint
from .._errors import MulticastError
from .._model import Group, SendResult
from .._options import EndpointOptions
from .._origin import Origin, validate_source_address
from . import contract, validate
from .fmt import WIDTH, host_port, parse_group_port, plural
from .logs import cli_words
from .runner import run_until_stopped, wait_or_stop
from .seqheader import HEADER_SIZE, encode_header

__all__ = ["SendTally", "cmd_send", "load_payload", "register", "result_line"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "send",
        help="send datagrams out of every interface",
        description="Send a payload to GROUP:PORT, one copy out of every eligible "
        "interface (or the ones named with --interface), and print the result per "
        "interface. The payload is MESSAGE, or --file (- for stdin), --hex or --size; "
        "--lines sends one datagram per line of stdin. Sends once, or --count times; "
        "with --rate or --interval and no --count, until Ctrl-C.",
    )
    p.add_argument("target", metavar="GROUP:PORT")
    # Not in the payload group below: intermixed parsing (options and operands in
    # any order) cannot put a positional in a mutually exclusive group;
    # load_payload() checks that one payload was chosen.
    p.add_argument("message", nargs="?", metavar="MESSAGE", help="text, sent as UTF-8")
    payload = p.add_mutually_exclusive_group()
    payload.add_argument(
        "--file", "-f", metavar="PATH", help="the payload from a file, - for stdin"
    )
    payload.add_argument("--hex", type=validate.hex_bytes, metavar="HEX", help="e.g. 48656c6c6f")
    payload.add_argument(
        "--size", type=validate.size, metavar="N", help="N bytes of filler (a..z repeating)"
    )
    payload.add_argument(
        "--lines",
        "-l",
        action="store_true",
        help="one datagram per line of stdin (without its newline), as it is typed",
    )
    p.add_argument(
        "--interface", "-i", action="append", metavar="IF", help="only this interface (repeatable)"
    )
    pace = p.add_mutually_exclusive_group()
    pace.add_argument(
        "--interval", type=validate.seconds, metavar="S", help="seconds between sends (default 1)"
    )
    pace.add_argument(
        "--rate", "-r", type=validate.positive_rate, metavar="PPS", help="sends per second"
    )
    p.add_argument(
        "--count",
        "-c",
        type=validate.count,
        metavar="N",
        help="how many (default 1; with --rate or --interval: until Ctrl-C)",
    )
    p.add_argument(
        "--seq",
        action="store_true",
        help="start each payload with a sequence number and send time that "
        "'mcastio listen' turns into loss, duplicates, reordering and delay",
    )
    p.add_argument(
        "--ttl", type=validate.ttl, default=1, metavar="N", help="hop limit (default 1: this link)"
    )
    p.add_argument(
        "--loopback", action="store_true", help="let programs on this host see the copies too"
    )
    mark = p.add_mutually_exclusive_group()
    mark.add_argument(
        "--tos",
        type=validate.tos,
        metavar="N",
        help="the IPv4 TOS / IPv6 traffic class byte, 0-255 (e.g. 0xb8)",
    )
    mark.add_argument(
        "--dscp",
        type=validate.dscp,
        metavar="D",
        help="the DSCP, 0-63 or a name (EF, AF41, CS1...): the TOS byte's top 6 bits",
    )
    p.add_argument(
        "--source",
        metavar="ADDR",
        help="send from this address of this host, out of its interface only",
    )
    p.add_argument(
        "--source-port",
        type=validate.port,
        metavar="N",
        help="send from this UDP port (the group's port: alongside its listeners)",
    )
    shown = p.add_mutually_exclusive_group()
    shown.add_argument("--json", action="store_true", help="one JSON object per copy")
    shown.add_argument("--quiet", "-q", action="store_true", help="print only the summary")
    p.set_defaults(handler=cmd_send)


def rounds_wanted(args: argparse.Namespace) -> int | None:
    """How many rounds to send: ``None`` means until stopped (Ctrl-C, SIGTERM, EOF).

    A pace without a count means "keep sending", as ``ping -i`` and ``socat``
    loops do; sending once and stopping without a word was a trap.
    """
    if args.count is not None:
        return int(args.count)
    if args.lines or args.rate or args.interval:
        return None
    return 1


def load_payload(args: argparse.Namespace, stdin: BinaryIO | None = None) -> bytes:
    """The payload the options name; ValueError with a reason otherwise."""
    if args.message is not None and (
        args.hex is not None or args.size is not None or args.file is not None or args.lines
    ):
        raise ValueError("give the payload once: MESSAGE, --file, --hex, --size or --lines")
    if args.lines:
        return b""  # each line is a payload of its own; see _stdin_lines
    if args.hex is not None:
        return bytes(args.hex)
    if args.size is not None:
        return bytes(97 + i % 26 for i in range(args.size))
    if args.file is not None:
        if args.file == "-":
            return (stdin or sys.stdin.buffer).read()
        try:
            with open(args.file, "rb") as f:
                return f.read()
        except OSError as exc:
            raise ValueError(f"cannot read {args.file}: {exc.strerror or exc}") from None
    if args.message is not None:
        return str(args.message).encode()
    raise ValueError("give a MESSAGE, or --file PATH (- for stdin), --hex HEX or --size N")


class SendTally:
    """Copies sent and failed per interface, for the summary."""

    __slots__ = ("failed", "octets", "rounds", "sent")

    def __init__(self) -> None:
        self.sent: dict[str, int] = {}
        self.failed: dict[str, int] = {}
        self.octets = 0
        self.rounds = 0

    def add(self, result: SendResult) -> None:
        self.sent.setdefault(result.interface, 0)
        self.failed.setdefault(result.interface, 0)
        if result.ok:
            self.sent[result.interface] += 1
            self.octets += result.sent
        else:
            self.failed[result.interface] += 1

    def summary(self, target: str) -> str:
        total = sum(self.sent.values())
        failed = sum(self.failed.values())
        lines = [
            f"sent {plural(total, 'datagram')} ({plural(self.octets, 'byte')}) to {target} "
            f"in {plural(self.rounds, 'round')}, {failed} failed"
        ]
        for name in self.sent:
            lines.append(f"  {name:<10} {self.sent[name]:>7} sent {self.failed[name]:>7} failed")
        return "\n".join(lines)

    def to_json(self) -> dict[str, object]:
        return {
            "rounds": self.rounds,
            "bytes": self.octets,
            "interfaces": {n: {"sent": self.sent[n], "failed": self.failed[n]} for n in self.sent},
        }


def result_line(round_no: int, result: SendResult) -> str:
    if result.ok:
        return f"#{round_no:<4} {result.interface:<10} sent {plural(result.sent, 'byte')}"
    return f"#{round_no:<4} {result.interface:<10} FAILED: {_error_text(result)}"[:WIDTH]


def _error_text(result: SendResult) -> str:
    err = result.error
    return f"{err.strerror or err}" if isinstance(err, OSError) else str(err)


def result_json(round_no: int, result: SendResult, seq: int | None) -> str:
    obj: dict[str, object] = {
        "round": round_no,
        "interface": result.interface,
        "ok": result.ok,
        "bytes": result.sent,
        "error": None if result.ok else _error_text(result),
    }
    if seq is not None:
        obj["seq"] = seq
    return json.dumps(obj)


async def _round(
    ep: MulticastEndpoint, group: Group, names: list[str] | None, payload: bytes
) -> list[SendResult]:
    joined = {i.name for i in ep.interfaces}
    if names is None:
        return list(await ep.send_all(payload))
    results = []
    for name in names:
        if name not in joined:
            results.append(SendResult(name, OSError(f"{name} cannot carry {group} right now")))
            continue
        try:
            results.append(await ep.send(payload, interface=name))
        except ValueError as exc:  # it went away since the round began
            results.append(SendResult(name, OSError(str(exc))))
        except MulticastError as exc:
            cause = exc.__cause__
            error = cause if isinstance(cause, OSError) else OSError(str(exc))
            results.append(SendResult(name, error))
    return results


async def _stdin_lines(stdin: BinaryIO) -> AsyncIterator[bytes]:
    """Each line of ``stdin`` without its line ending, as it arrives."""
    if stat.S_ISREG(os.fstat(stdin.fileno()).st_mode):
        # epoll cannot watch a regular file; it is all there already.
        for line in stdin:
            yield line.rstrip(b"\r\n")
        return
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=validate.MAX_PAYLOAD + 2)
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), stdin)
    try:
        while line := await reader.readline():
            yield line.rstrip(b"\r\n")
    finally:
        transport.close()


async def _payloads(args: argparse.Namespace, payload: bytes) -> AsyncGenerator[bytes, None]:
    """The payload of each round: the same one, or the next line of stdin."""
    if args.lines:
        async for line in _stdin_lines(sys.stdin.buffer):
            yield line
        return
    while True:
        yield payload


async def _next(payloads: AsyncIterator[bytes]) -> bytes | None:
    """The next payload, or None when stdin has ended."""
    return await anext(payloads, None)


async def _send(
    group: Group,
    port: int,
    args: argparse.Namespace,
    payload: bytes,
    tally: SendTally,
    out: TextIO,
    stop: asyncio.Event,
) -> bool:
    ok = True
    paced = not args.lines or args.rate or args.interval
    interval = 1 / args.rate if args.rate else (args.interval or 1.0)
    wanted = rounds_wanted(args)
    stream = secrets.randbits(32)
    # Send-only: a sender that never listens must not join (no IGMP/MLD on the wire).
    async with MulticastEndpoint(
        str(group),
        port,
        interfaces=args.interface or None,
        ttl=args.ttl,
        loopback=args.loopback,
        join=False,
        tos=args.tos if args.dscp is None else args.dscp,
        source_address=args.source,
        source_port=args.source_port or "ephemeral",
    ) as ep:
        loop = asyncio.get_running_loop()
        start = loop.time()
        payloads = _payloads(args, payload)
        try:
            for n in itertools.count(1):
                if wanted is not None and n > wanted:
                    break
                if n > 1 and paced:
                    # Paced from the start, so the rate holds however long each round takes.
                    delay = start + (n - 1) * interval - loop.time()
                    finished, _ = await wait_or_stop(asyncio.sleep(max(delay, 0)), stop)
                    if not finished:
                        break
                finished, data = await wait_or_stop(_next(payloads), stop)
                if not finished or data is None or stop.is_set():
                    break
                ok = await _one_round(ep, group, args, n, data, stream, tally, out) and ok
        finally:
            await payloads.aclose()
    return ok


async def _one_round(
    ep: MulticastEndpoint,
    group: Group,
    args: argparse.Namespace,
    n: int,
    payload: bytes,
    stream: int,
    tally: SendTally,
    out: TextIO,
) -> bool:
    seq = n - 1 if args.seq else None
    data = payload
    if seq is not None:
        data = encode_header(stream, seq, time.time_ns()) + payload
    tally.rounds += 1
    if not ep.interfaces:
        if not args.quiet:
            print(f"#{n:<4} no interface can carry {group} right now", file=out)
        return False
    ok = True
    for result in await _round(ep, group, args.interface, data):
        ok = ok and result.ok
        tally.add(result)
        if args.json:
            print(result_json(n, result, seq), file=out)
        elif not args.quiet:
            print(result_line(n, result), file=out)
    out.flush()
    return ok


def _check_source_on_each(source: str, group: Group, names: list[str]) -> None:
    """ValueError when an interface named with -i does not hold the --source address.

    Copies leave only where the address is: a named interface without it would be
    reported as failing every round, when the command line itself asked for the
    impossible. Names the host does not have are left to the endpoint's own check.
    """
    address, scope = validate_source_address(source, group)
    try:
        snapshot = read_snapshot()
    except OSError as exc:
        raise MulticastError(f"cannot read this host's interfaces: {exc}") from exc
    holders = {i.name for i in Origin(address=address, scope=scope).owners(snapshot)}
    known = {i.name for i in snapshot}
    elsewhere = [n for n in names if n in known and n not in holders]
    if elsewhere:
        raise ValueError(
            f"--source {source} is not an address of {', '.join(elsewhere)}; "
            "name only interfaces that hold it with --interface"
        )


def cmd_send(args: argparse.Namespace) -> int:
    try:
        group, port = parse_group_port(args.target)
        payload = load_payload(args)
        # Checked before the network, as the operands are: --source, --source-port.
        EndpointOptions.build(
            str(group),
            port,
            source_address=args.source,
            source_port=args.source_port or "ephemeral",
        )
        if args.source and args.interface:
            _check_source_on_each(args.source, group, args.interface)
    except ValueError as exc:
        return contract.usage(cli_words(str(exc)))
    except MulticastError as exc:
        return contract.failed(cli_words(str(exc)))
    if len(payload) > group.max_payload:
        # A usage error, like an out-of-range --size: nothing was tried on the network.
        return contract.usage(
            f"the payload is {len(payload)} bytes; a UDP datagram to "
            f"{group} holds at most {group.max_payload}"
        )
    if args.seq and len(payload) + HEADER_SIZE > validate.MAX_PAYLOAD:
        return contract.usage(f"--seq adds {HEADER_SIZE} bytes: payload too long")
    tally = SendTally()
    try:
        ok = run_until_stopped(
            lambda stop: _send(group, port, args, payload, tally, sys.stdout, stop)
        )
    except ValueError as exc:  # an argument the library refused: a bad -i, --ttl
        return contract.usage(cli_words(str(exc)))
    except MulticastError as exc:
        return contract.failed(cli_words(str(exc)))
    target = host_port(str(group), port)
    if args.json:
        print(json.dumps({"summary": tally.to_json()}), flush=True)
    elif args.quiet or tally.rounds > 1 or rounds_wanted(args) != 1:
        print(tally.summary(target), flush=True)
    return contract.OK if ok else contract.FAILED
