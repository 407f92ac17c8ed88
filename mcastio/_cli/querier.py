"""``mcastio querier``: run the backup IGMP/MLD querier until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from .._errors import MulticastError
from .._querier import Querier, QuerierState
from . import contract, validate
from .fmt import plural
from .logs import cli_words
from .runner import run_until_stopped

__all__ = ["cmd_querier", "register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    querier = sub.add_parser(
        "querier",
        help="be the IGMP/MLD querier of a segment that has none",
        description="Send IGMP and MLD general queries from each interface's own address, "
        "so snooping switches keep every host's memberships. Stands down while a querier "
        "with a lower address is heard (RFC 3376 election). Needs root or CAP_NET_RAW.",
    )
    querier.add_argument(
        "--interface", "-i", action="append", metavar="IF", help="only this interface (repeatable)"
    )
    querier.add_argument(
        "--interval",
        type=validate.seconds,
        default=125.0,
        metavar="SECONDS",
        help="query interval (default 125, RFC 3376)",
    )
    querier.add_argument(
        "--igmp-version", type=int, choices=(2, 3), default=3, help="IGMP query format (default 3)"
    )
    querier.add_argument(
        "--mld-version", type=int, choices=(1, 2), default=2, help="MLD query format (default 2)"
    )
    family = querier.add_mutually_exclusive_group()
    family.add_argument("-4", dest="ipv6", action="store_false", help="IGMP only")
    family.add_argument("-6", dest="ipv4", action="store_false", help="MLD only")
    querier.add_argument(
        "--duration",
        "-d",
        type=validate.seconds,
        metavar="S",
        help="stop after S seconds (default: never)",
    )
    querier.set_defaults(handler=cmd_querier)


def _line(state: QuerierState) -> str:
    if state.role == "querier":
        return f"{state.interface} {state.protocol}: querier, from {state.address}"
    return (
        f"{state.interface} {state.protocol}: non-querier, {state.other_querier} "
        "has the lower address"
    )


def cmd_querier(args: argparse.Namespace) -> int:
    def changed(state: QuerierState) -> None:
        print(_line(state), flush=True)

    async def main(stop: asyncio.Event) -> None:
        querier = Querier(
            interfaces=args.interface,
            interval=args.interval,
            igmp_version=args.igmp_version,
            mld_version=args.mld_version,
            ipv4=args.ipv4,
            ipv6=args.ipv6,
            on_change=changed,
        )
        async with querier:
            for state in querier.states:
                print(_line(state) + f", every {querier.interval:g} s", flush=True)
            # Ctrl-C and SIGTERM end the wait, so the summary below is always printed.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), args.duration)
            for state in querier.states:
                sent = plural(state.queries_sent, "query", "queries")
                print(f"{state.interface} {state.protocol}: {sent} sent")

    try:
        run_until_stopped(main)
    except ValueError as exc:  # an argument the library refused: a bad -i
        return contract.usage(cli_words(str(exc)))
    except MulticastError as exc:
        return contract.failed(cli_words(str(exc)))
    return contract.OK
