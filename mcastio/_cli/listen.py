"""``mcastio listen``: join groups on every interface and show what arrives."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from .._endpoint import MulticastEndpoint
from .._errors import MulticastError
from .._model import Datagram, Group
from .._subscription import Subscription
from . import contract, validate
from .fmt import (
    datagram_json,
    datagram_line,
    destination,
    hexdump,
    host_port,
    listen_header,
    parse_targets,
    payload_text,
)
from .logs import cli_words
from .pcapng import PcapWriter
from .runner import run_until_stopped, wait_or_stop
from .seqheader import decode_header
from .tracking import Tally, progress_line

__all__ = ["cmd_listen", "register"]

#: Queue per subscription: a flood fills the kernel buffer first, then this.
QUEUE_SIZE = 4096


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "listen",
        help="join groups on every interface and print what arrives",
        description="Join each GROUP on every eligible interface (or the ones named "
        "with --interface) and print each datagram with the interface it arrived on "
        "and its TTL; on exit (--count, --duration, Ctrl-C or SIGTERM) print a "
        "summary per interface with the datagrams dropped on this host, and loss, "
        "duplicates, reordering and delay for senders using 'mcastio send --seq'.",
    )
    p.add_argument(
        "targets",
        nargs="+",
        metavar="GROUP:PORT",
        help="e.g. 239.255.0.1:5000 or [ff02::fb]:5353; several allowed, and ranges "
        "as mcjoin joins them: 239.1.1.1-20:5000 or 239.1.1.1-239.1.1.20:5000",
    )
    p.add_argument(
        "--interface", "-i", action="append", metavar="IF", help="only this interface (repeatable)"
    )
    p.add_argument(
        "--source",
        "-s",
        action="append",
        metavar="ADDR",
        help="source-specific (SSM): only from this sender (repeatable; 232/8, ff3x::)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per datagram")
    p.add_argument("--count", "-c", type=validate.count, metavar="N", help="stop after N")
    p.add_argument(
        "--duration", "-d", type=validate.seconds, metavar="S", help="stop after S seconds"
    )
    shown = p.add_mutually_exclusive_group()
    shown.add_argument("--hex", action="store_true", help="also dump each payload in hex")
    shown.add_argument(
        "--text",
        "-A",
        action="store_true",
        help="also print each payload in full, as text (as tcpdump -A)",
    )
    shown.add_argument(
        "--raw",
        action="store_true",
        help="write only the payloads, as they are, to stdout (for a pipe); "
        "everything else goes to stderr",
    )
    shown.add_argument(
        "--quiet", "-q", action="store_true", help="print only the summary (for floods)"
    )
    shown.add_argument(
        "--progress",
        "-p",
        type=validate.seconds,
        metavar="S",
        help="instead of each datagram, one line of totals and rates every S seconds",
    )
    p.add_argument(
        "--pcap",
        "-w",
        metavar="FILE",
        help="also write every datagram to FILE (pcapng, for tcpdump -r and Wireshark; "
        "one interface block per interface, IP/UDP headers rebuilt)",
    )
    p.add_argument(
        "--fail-empty",
        action="store_true",
        help="exit 1 when nothing arrived (for scripts and health checks)",
    )
    p.set_defaults(handler=cmd_listen)


class _Printer:
    """Counts every datagram and prints it the way the options ask."""

    def __init__(
        self,
        args: argparse.Namespace,
        tally: Tally,
        out: TextIO,
        dest_width: int,
        pcap: PcapWriter | None = None,
    ) -> None:
        self.args = args
        self.tally = tally
        self.out = out
        self.dest_width = dest_width
        self.pcap = pcap
        self.done = asyncio.Event()
        self.each = not (args.quiet or args.progress)

    def handle(self, batch: list[Datagram], port: int) -> None:
        args, tally = self.args, self.tally
        now_ns = time.time_ns()
        for dgram in batch:
            if args.count is not None and tally.total >= args.count:
                self.done.set()
                return
            source = dgram.source[0]
            tally.add(dgram.interface, source, len(dgram.data), destination(dgram, port))
            if self.pcap is not None:
                self.pcap.write(dgram, port, now_ns)
            header = decode_header(dgram.data)
            seq = None
            if header is not None:
                seq = header.seq
                tally.add_seq(dgram.interface, source, header.stream, seq, now_ns - header.sent_ns)
            if self.each:
                self._print(dgram, now_ns, seq, port)
        if args.count is not None and tally.total >= args.count:
            self.done.set()

    def _print(self, dgram: Datagram, now_ns: int, seq: int | None, port: int) -> None:
        if self.args.raw:
            self.out.buffer.write(dgram.data)
            self.out.buffer.flush()
            return
        when = datetime.datetime.fromtimestamp(now_ns / 1e9, datetime.timezone.utc)
        ttl = dgram.ttl
        if self.args.json:
            line = datagram_json(dgram, when, ttl, seq, port)
        else:
            line = datagram_line(dgram, when.astimezone(), ttl, seq, port, self.dest_width)
            if self.args.hex:
                line = "\n".join([line, *hexdump(dgram.data)])
            elif self.args.text:
                line = "\n".join([line, *payload_text(dgram.data)])
        print(line, file=self.out, flush=True)


def _open(group: Group, port: int, args: argparse.Namespace) -> MulticastEndpoint:
    return MulticastEndpoint(
        str(group),
        port,
        interfaces=args.interface or None,
        sources=args.source or None,
        queue_size=QUEUE_SIZE,
        receive_ttl=True,
    )


async def _pump(
    sub: Subscription, port: int, handle: Callable[[list[Datagram], int], None]
) -> None:
    while batch := await sub.get_batch():
        handle(batch, port)


async def _listen(
    targets: list[tuple[Group, int]],
    args: argparse.Namespace,
    tally: Tally,
    out: TextIO,
    stop: asyncio.Event,
) -> None:
    status = sys.stderr if args.json or args.raw else out
    async with contextlib.AsyncExitStack() as stack:
        endpoints = []
        for group, port in targets:
            ep = await stack.enter_async_context(_open(group, port, args))
            names = [i.name for i in ep.interfaces]
            if not names:
                # The endpoint would wait for one to appear; a listener that hears
                # nothing for a reason it never states is the silent failure we avoid.
                raise MulticastError(f"no interface can carry {group} on this host now")
            tally.interfaces += [n for n in names if n not in tally.interfaces]
            endpoints.append(ep)
            where = ", ".join(names)
            ssm = f" from {', '.join(args.source)}" if args.source else ""
            print(f"listening on {host_port(str(group), port)}{ssm} on {where}", file=status)
        dest_width = max(len(host_port(str(g), p)) for g, p in targets)
        if not (args.json or args.quiet or args.progress or args.raw):
            print(listen_header(dest_width, ports=True), file=out)
        status.flush()
        pcap = None
        if args.pcap is not None:
            pcap = stack.enter_context(PcapWriter.open(args.pcap))
        printer = _Printer(args, tally, out, dest_width, pcap)
        subs = [ep.subscribe() for ep in endpoints]

        def update_drops() -> None:
            tally.drops.kernel = sum(ep.stats.kernel_dropped for ep in endpoints)
            tally.drops.queue = sum(s.dropped for s in subs)

        pumps = [
            asyncio.create_task(_pump(s, port, printer.handle))
            for s, (_group, port) in zip(subs, targets, strict=True)
        ]
        reporter = None
        if args.progress:
            reporter = asyncio.create_task(_report(args.progress, tally, out, update_drops))
        try:
            ended = asyncio.ensure_future(printer.done.wait())
            await wait_or_stop(_first(ended, pumps), stop, args.duration)
        finally:
            for task in [*pumps, *([reporter] if reporter else [])]:
                task.cancel()
            for task in [*pumps, *([reporter] if reporter else [])]:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            update_drops()


async def _first(ended: asyncio.Future[Any], pumps: list[asyncio.Task[None]]) -> None:
    """Until the count is reached or every subscription has ended."""
    waiting: set[asyncio.Future[Any]] = {ended, *pumps}
    try:
        await asyncio.wait(waiting, return_when="FIRST_COMPLETED")
    finally:
        ended.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ended


async def _report(interval: float, tally: Tally, out: TextIO, update: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    start = last = loop.time()
    last_total = last_octets = 0
    while True:
        await asyncio.sleep(interval - (loop.time() - start) % interval)
        now = loop.time()
        update()
        print(progress_line(now - start, tally, last_total, last_octets, now - last), file=out)
        out.flush()
        last, last_total, last_octets = now, tally.total, tally.octets


def cmd_listen(args: argparse.Namespace) -> int:
    try:
        targets = [target for text in args.targets for target in parse_targets(text)]
    except ValueError as exc:
        return contract.usage(str(exc))
    if args.raw and args.json:
        return contract.usage("--raw and --json both write to stdout: choose one")
    tally = Tally()
    code = contract.OK
    try:
        run_until_stopped(lambda stop: _listen(targets, args, tally, sys.stdout, stop))
    except ValueError as exc:  # an argument the library refused: a bad -i or -s
        return contract.usage(cli_words(str(exc)))
    except MulticastError as exc:
        code = contract.failed(cli_words(str(exc)))
        if not tally.interfaces:
            return code  # it never listened: a summary of nothing would only confuse
    names = " ".join(args.targets)
    summary_to = sys.stderr if args.json or args.raw else sys.stdout
    print(tally.summary(names), file=summary_to, flush=True)
    if args.json:
        print(json.dumps({"summary": tally.to_json()}), flush=True)
    if code == 0 and args.fail_empty and tally.total == 0:
        code = contract.failed("nothing arrived")
    return code
