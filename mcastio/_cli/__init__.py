"""The ``mcastio`` command line and the diagnosis behind it.

Nothing in the library core imports this package: ``import mcastio`` stays free of
argparse, the packet capture and the /proc readers. The entry point is :func:`main`.

Each subcommand lives in a module with a ``register(subparsers)`` function; adding
one is a line in :data:`COMMAND_MODULES`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["COMMAND_MODULES", "build_parser", "main"]

#: Modules (relative to this package) whose ``register`` adds subcommands, in the
#: order ``mcastio --help`` lists them.
COMMAND_MODULES = ["demo", "listen", "send", "ping", "commands", "querier", "relay"]


class _Parser(argparse.ArgumentParser):
    """argparse with the error line in the form every mcastio message has."""

    def error(self, message: str) -> None:  # type: ignore[override]
        from .contract import PREFIX, USAGE, wrap

        self.print_usage(sys.stderr)
        self.exit(USAGE, wrap(PREFIX, f"{message} (see '{self.prog} --help')") + "\n")


class _SubParser(_Parser):
    """A subcommand's parser: options and operands in any order, ``-v`` anywhere.

    Plain argparse stops filling positionals at the first option, so
    ``send G --seq ping`` left ``ping`` over and the top-level parser refused it
    with the top-level usage. Intermixed parsing takes operands wherever they
    stand, and leftovers are refused here, with this subcommand's usage.
    """

    _inside = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # SUPPRESS: without -v here, the top level's value (maybe given before
        # the subcommand) stays.
        self.add_argument(
            "--verbose",
            "-v",
            action="store_true",
            default=argparse.SUPPRESS,
            help="also log joins, leaves and interface changes",
        )

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        if self._inside:  # parse_known_intermixed_args calls back here
            return super().parse_known_args(args, namespace)
        self._inside = True
        try:
            parsed, extras = self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inside = False
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = _Parser(
        prog="mcastio",
        description="IP multicast on every interface of a multi-homed host.",
        epilog="Documentation: docs/cli.md, or 'mcastio COMMAND --help'.",
    )
    parser.add_argument("--version", action="version", version=f"mcastio {__version__}")
    parser.add_argument(
        "--verbose", "-v", action="store_true", help="also log joins, leaves and interface changes"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_SubParser)
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f".{name}", __name__).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from .logs import setup_logging

    parser = build_parser()
    args = parser.parse_args(argv)
    handler = setup_logging(verbose=args.verbose)
    try:
        code: int = args.handler(args)
    except KeyboardInterrupt:
        return 130
    finally:
        logging.getLogger("mcastio").removeHandler(handler)
    return code


if __name__ == "__main__":
    sys.exit(main())
