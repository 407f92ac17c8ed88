"""The ``mcastio`` command line and the diagnosis behind it.

Nothing in the library core imports this package: ``import mcastio`` stays free of
argparse, the packet capture and the /proc readers. The entry point is :func:`main`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mcastio",
        description="IP multicast on every interface of a multi-homed host.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    demo = sub.add_parser(
        "demo",
        help="show what naive sockets and mcastio do on a simulated multi-homed host",
        description=(
            "Build a private namespace lab (root or 'unshare -rnm' needed) and compare "
            "naive multicast sockets with mcastio on it. Without namespace rights, fall "
            "back to a loopback send and receive on this host."
        ),
    )
    demo.add_argument("--links", type=int, default=3, help="links on the simulated host (2-8)")
    demo.set_defaults(handler=_cmd_demo)
    _add_commands(sub)
    return parser


def _add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from . import commands

    listen = sub.add_parser(
        "listen",
        help="join a group on every interface and print what arrives",
        description="Join GROUP on every eligible interface (or the ones named with "
        "--interface) and print each datagram; print a per-interface summary on exit.",
    )
    listen.add_argument(
        "target", metavar="GROUP:PORT", help="e.g. 239.255.0.1:5000 or [ff02::fb]:5353"
    )
    listen.add_argument(
        "--interface", "-i", action="append", metavar="IF", help="only this interface (repeatable)"
    )
    listen.add_argument("--json", action="store_true", help="one JSON object per datagram")
    listen.add_argument("--count", "-c", type=int, metavar="N", help="stop after N datagrams")
    listen.add_argument("--duration", "-d", type=float, metavar="S", help="stop after S seconds")
    listen.set_defaults(handler=commands.cmd_listen)

    send = sub.add_parser(
        "send",
        help="send a message out of every interface",
        description="Send MESSAGE to GROUP:PORT, one copy out of every eligible interface "
        "(or the ones named with --interface), and print the result per interface.",
    )
    send.add_argument("target", metavar="GROUP:PORT")
    send.add_argument("message", metavar="MESSAGE")
    send.add_argument(
        "--interface", "-i", action="append", metavar="IF", help="only this interface (repeatable)"
    )
    send.add_argument(
        "--interval", type=float, default=1.0, metavar="S", help="seconds between sends (default 1)"
    )
    send.add_argument(
        "--count", "-c", type=int, default=1, metavar="N", help="how many times (default 1)"
    )
    send.add_argument(
        "--ttl", type=int, default=1, metavar="N", help="hop limit (default 1: this link only)"
    )
    send.add_argument(
        "--loopback", action="store_true", help="let programs on this host see the copies too"
    )
    send.set_defaults(handler=commands.cmd_send)

    interfaces = sub.add_parser(
        "interfaces",
        help="list interfaces, their eligibility and the kernel's group memberships",
    )
    interfaces.add_argument("--json", action="store_true", help="machine-readable output")
    interfaces.set_defaults(handler=commands.cmd_interfaces)

    doctor = sub.add_parser(
        "doctor",
        help="look for the traps that make multicast fail on this host",
        description="Watch the host for --duration seconds (IGMP queries, rp_filter drops) "
        "and report findings. Exits 1 when any finding is an error.",
    )
    doctor.add_argument("group", nargs="?", metavar="GROUP", help="the group you want to use")
    doctor.add_argument(
        "--duration",
        "-d",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds to watch (default 10)",
    )
    doctor.add_argument("--json", action="store_true", help='print {"findings": [...]}')
    doctor.set_defaults(handler=commands.cmd_doctor)

    from .querier import add_parser as add_querier

    add_querier(sub)


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(links=args.links)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
