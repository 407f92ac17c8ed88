"""``mcastio relay``: carry discovery groups between interfaces, answers included."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from typing import TextIO

from .._errors import MulticastError
from .._model import Group
from .._relay import Relay, RelayStats
from .._relayrules import SLOTS
from . import validate
from .fmt import host_port, parse_group_port, plural
from .logs import cli_words
from .runner import run_until_stopped, wait_or_stop

__all__ = ["PRESETS", "cmd_relay", "register", "stats_json", "stats_text"]

#: Names that stand for the groups of a discovery protocol, both families.
PRESETS = {
    "mdns": ("224.0.0.251:5353", "[ff02::fb]:5353"),
    "ssdp": ("239.255.255.250:1900", "[ff02::c]:1900"),
    "wsd": ("239.255.255.250:3702", "[ff02::c]:3702"),
}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "relay",
        help="carry groups between interfaces, with their answers, without loops",
        description="Forward each GROUP:PORT (or mdns, ssdp, wsd) between the interfaces "
        "named with --interface, both ways unless --from/--to say one way. Unicast "
        "answers to relayed requests are carried back to the requester. On exit "
        "(Ctrl-C, SIGTERM, --duration) print the counters per direction. "
        "See docs/how-to/relay.md.",
    )
    p.add_argument(
        "targets",
        nargs="+",
        metavar="GROUP:PORT",
        help="e.g. 239.255.255.250:1900, [ff02::fb]:5353, or mdns, ssdp, wsd",
    )
    p.add_argument(
        "--interface",
        "-i",
        action="append",
        required=True,
        metavar="IF",
        help="an interface to relay between (at least two; repeatable)",
    )
    p.add_argument(
        "--from", dest="from_", action="append", metavar="IF", help="one way: only from IF"
    )
    p.add_argument("--to", action="append", metavar="IF", help="one way: only to IF")
    p.add_argument(
        "--rate",
        type=validate.positive_rate,
        default=50.0,
        metavar="N",
        help="datagrams a second from one source (default 50; burst twice that)",
    )
    p.add_argument(
        "--link-rate",
        type=validate.positive_rate,
        default=500.0,
        metavar="N",
        help="datagrams a second from one interface (default 500; burst twice that)",
    )
    p.add_argument(
        "--max-size",
        type=validate.size,
        default=9000,
        metavar="B",
        help="drop (never cut) datagrams larger than B bytes (default 9000)",
    )
    p.add_argument(
        "--slot",
        type=int,
        choices=range(SLOTS),
        metavar="N",
        help=f"hold-down slot 0-{SLOTS - 1} (default: from this host's address)",
    )
    p.add_argument(
        "--ttl", type=validate.ttl, metavar="N", help="TTL of copies (default 1, mDNS 255)"
    )
    p.add_argument(
        "--duration", "-d", type=validate.seconds, metavar="S", help="stop after S seconds"
    )
    p.add_argument("--json", action="store_true", help="print the counters as JSON on exit")
    p.set_defaults(handler=cmd_relay)


def parse_targets(texts: Sequence[str]) -> list[tuple[Group, int]]:
    out: list[tuple[Group, int]] = []
    for text in texts:
        for item in PRESETS.get(text.lower(), (text,)):
            target = parse_group_port(item)
            if target not in out:
                out.append(target)
    return out


def directions(args: argparse.Namespace) -> list[tuple[str, str]] | None:
    """The (from, to) pairs --from and --to ask for; None for every pair."""
    if not args.from_ and not args.to:
        return None
    names = list(dict.fromkeys(args.interface))
    froms = args.from_ or [n for n in names if n not in (args.to or [])]
    tos = args.to or [n for n in names if n not in froms]
    pairs = [(a, b) for a in froms for b in tos if a != b]
    if not pairs:
        raise ValueError("--from and --to leave no direction to relay")
    return pairs


def stats_text(stats: Sequence[RelayStats], elapsed: float, evicted: int = 0) -> str:
    lines = [
        f"relay summary after {elapsed:.1f} s",
        f"  {'FROM':<10} {'TO':<10} {'FORWARDED':>9} {'ANSWERS':>7} {'RULE':>6} {'RATE':>7}"
        f" {'LOOP':>7} {'FAILED':>6}",
    ]
    for s in stats:
        lines.append(
            f"  {s.source[:10]:<10} {s.destination[:10]:<10} {s.forwarded:>9} {s.answers:>7}"
            f" {s.dropped_rule:>6} {s.dropped_rate:>7} {s.dropped_loop:>7} {s.failed:>6}"
        )
    lines.append("  RULE: over --max-size; RATE: over --rate or --link-rate;")
    lines.append("  LOOP: from this host, a copy seen before, or sent first by another relay")
    if evicted:
        lines.append(f"  {plural(evicted, 'pending request')} dropped from a full table")
    return "\n".join(lines)


def stats_json(stats: Sequence[RelayStats], elapsed: float, evicted: int = 0) -> dict[str, object]:
    fields = ("forwarded", "answers", "dropped_rule", "dropped_rate", "dropped_loop", "failed")
    return {
        "relay": {
            "elapsed": round(elapsed, 3),
            "pending_evicted": evicted,
            "directions": [
                {"from": s.source, "to": s.destination, **{f: getattr(s, f) for f in fields}}
                for s in stats
            ],
        }
    }


async def _relay(relay: Relay, args: argparse.Namespace, out: TextIO, stop: asyncio.Event) -> None:
    async with relay:
        groups = ", ".join(host_port(g, p) for g, p in relay.targets)
        ways = "both ways" if directions(args) is None else "one way"
        pairs = " ".join(f"{a}->{b}" for a, b in relay.directions)
        status = sys.stderr if args.json else out
        print(f"relaying {groups}", file=status)
        print(f"  {ways}: {pairs}", file=status, flush=True)
        await wait_or_stop(asyncio.Event().wait(), stop, args.duration)


def cmd_relay(args: argparse.Namespace) -> int:
    try:
        targets = parse_targets(args.targets)
        relay = Relay(
            [(str(g), p) for g, p in targets],
            args.interface,
            directions=directions(args),
            ttl=args.ttl,
            max_size=args.max_size,
            source_rate=args.rate,
            source_burst=2 * args.rate,
            link_rate=args.link_rate,
            link_burst=2 * args.link_rate,
            slot=args.slot,
        )
    except ValueError as exc:
        print(f"mcastio relay: {exc}", file=sys.stderr)
        return 2
    started = time.monotonic()
    code = 0
    try:
        run_until_stopped(lambda stop: _relay(relay, args, sys.stdout, stop))
    except (MulticastError, ValueError) as exc:
        print(f"mcastio: {cli_words(str(exc))}", file=sys.stderr)
        code = 1
    elapsed = time.monotonic() - started
    stats = relay.stats
    if args.json:
        print(json.dumps(stats_json(stats, elapsed, relay.evicted)), flush=True)
    else:
        print(stats_text(stats, elapsed, relay.evicted), flush=True)
        total = sum(s.forwarded for s in stats)
        print(f"  {plural(total, 'datagram')} forwarded", flush=True)
    return code
