"""Search for UPnP devices with SSDP M-SEARCH on every link, and print who answered where.

Usage::

    python examples/ssdp_search.py [ST] [--mx SECONDS] [--interface NAME ...]
    sudo python examples/ssdp_search.py --lab     # in a namespace lab, never on your network

ST (the search target) defaults to ``ssdp:all``. ``--lab`` builds a
:class:`mcastio.testing.Lab` with minidlna (a UPnP media server from Debian)
behind each of two links, and searches there; it needs root and minidlna.

The search leaves each interface from that interface's transmit socket, on a port
of its own. Devices answer by unicast to that port; mcastio delivers the answers
as *replies* (``Datagram.group`` is ``None``), each with the interface it came in
on. (With ``source_port="group"`` the search would leave from port 1900, and the
answers would go to whichever program is bound to port 1900 instead.)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

import mcastio

SSDP_GROUP, SSDP_PORT = "239.255.255.250", 1900


@dataclass(frozen=True)
class Response:
    interface: str
    source: str
    headers: dict[str, str]


def m_search(st: str, mx: int) -> bytes:
    return (
        "M-SEARCH * HTTP/1.1\r\n"
        f"HOST: {SSDP_GROUP}:{SSDP_PORT}\r\n"
        'MAN: "ssdp:discover"\r\n'
        f"MX: {mx}\r\n"
        f"ST: {st}\r\n\r\n"
    ).encode()


def parse_response(data: bytes) -> dict[str, str] | None:
    """The headers of an ``HTTP/1.1 200 OK`` search response, names upper-cased."""
    lines = data.decode("utf-8", "replace").split("\r\n")
    if not lines[0].startswith("HTTP/1.1 200"):
        return None
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().upper()] = value.strip()
    return headers


async def search(
    st: str = "ssdp:all", *, mx: int = 1, interfaces: Sequence[str] | None = None
) -> list[Response]:
    """Every answer to one M-SEARCH on every interface, within MX plus a little."""
    found: list[Response] = []
    async with mcastio.MulticastEndpoint(SSDP_GROUP, SSDP_PORT, interfaces=interfaces) as ep:
        sub = ep.subscribe()  # before sending: answers arriving earlier are not kept

        async def collect() -> None:
            async for dgram in sub:
                headers = parse_response(dgram.data) if dgram.is_reply else None
                if headers is not None:
                    found.append(Response(dgram.interface, dgram.source[0], headers))

        reader = asyncio.ensure_future(collect())
        await ep.send_all(m_search(st, mx))
        # A device waits up to MX seconds before it answers.
        await asyncio.sleep(mx + 0.3)
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        sub.close()
    return found


def report(found: Sequence[Response]) -> list[str]:
    """A line per answer (interface, responder, ST), its SERVER and LOCATION under it:
    within 80 columns, as a terminal shows them."""
    lines = []
    for r in found:
        lines.append(f"{r.interface:<8} {r.source:<15} {r.headers.get('ST', '')}")
        for key in ("SERVER", "LOCATION"):
            if r.headers.get(key):
                lines += textwrap.wrap(
                    f"{key.lower()}: {r.headers[key]}",
                    80,
                    initial_indent="    ",
                    subsequent_indent="      ",
                    break_on_hyphens=False,
                )
    return lines


def _in_lab(st: str, mx: int) -> list[Response]:
    from mcastio.testing import Lab
    from mcastio.testing.responders import MiniDlna

    with Lab(links=2, ipv6=False) as lab:
        servers = [MiniDlna(lab, lk.peer_ns, lk.peer_if, f"peer{lk.index}") for lk in lab.link]
        with contextlib.ExitStack() as stack:
            for server in servers:
                stack.enter_context(server)
            with lab.inside():
                return asyncio.run(search(st, mx=mx))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("st", nargs="?", default="ssdp:all")
    parser.add_argument("--mx", type=int, default=1)
    parser.add_argument("--interface", action="append", dest="interfaces")
    parser.add_argument("--lab", action="store_true", help="run in a namespace lab (root)")
    args = parser.parse_args(argv)
    if args.lab:
        found = _in_lab(args.st, args.mx)
    else:
        found = asyncio.run(search(args.st, mx=args.mx, interfaces=args.interfaces))
    for line in report(found):
        print(line)
    return 0 if found else 1


if __name__ == "__main__":
    sys.exit(main())
