"""The ``mcastio`` command line."""

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
    return parser


def _cmd_demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo

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
