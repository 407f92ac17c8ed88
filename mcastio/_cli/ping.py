"""``mcastio ping``: is multicast (and unicast) working to each peer, on each link?

Run it on several hosts at once, like omping. See :mod:`.pingstats` for the
protocol; this module does the sockets.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import itertools
import json
import re
import secrets
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .. import _net
from .._endpoint import MulticastEndpoint
from .._errors import MulticastError
from .._model import Datagram, Group, Interface
from .._subscription import Subscription
from . import contract, validate
from .fmt import host_port, parse_group_port
from .logs import cli_words
from .pingstats import (
    MULTICAST,
    NO_PEERS,
    PROBE,
    UNICAST,
    Answer,
    Message,
    Peer,
    PingStats,
    answer_line,
    broken,
    decode,
    encode,
    summary_line,
    table,
)
from .runner import run_until_stopped, wait_or_stop

__all__ = ["cmd_ping", "register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "ping",
        help="measure multicast and unicast to each peer, on each link (like omping)",
        description="Run on several hosts at once. Each sends numbered probes to "
        "GROUP:PORT on every interface and by unicast to each PEER, and answers the "
        "others' probes; at the end it prints, per peer and interface, loss, "
        "duplicates and round-trip times for unicast and multicast. Peers are found "
        "by their probes; name them (their unicast address) to also see the ones "
        "multicast cannot reach. Exits 1 when some peer never answered somewhere.",
    )
    p.add_argument(
        "target",
        metavar="GROUP:PORT",
        help="the group; an IPv4 and an IPv6 one (e.g. '[ff12::1]:4321' after it) "
        "ping both families in one run",
    )
    p.add_argument(
        "peers",
        nargs="*",
        metavar="PEER",
        help="a peer's unicast address (either family)",
    )
    p.add_argument(
        "--interface", "-i", action="append", metavar="IF", help="only this interface (repeatable)"
    )
    p.add_argument(
        "--count", "-c", type=validate.count, default=10, metavar="N", help="probes (default 10)"
    )
    p.add_argument(
        "--interval", type=validate.seconds, default=1.0, metavar="S", help="seconds between probes"
    )
    p.add_argument(
        "--wait",
        type=validate.non_negative_seconds,
        metavar="S",
        help="keep answering for S seconds after the last probe (default 2 intervals, "
        "at least 1 s), so slower-starting peers get their answers",
    )
    p.add_argument("--ttl", type=validate.ttl, default=1, metavar="N", help="hop limit (default 1)")
    p.add_argument(
        "--ssm",
        action="store_true",
        help="source-specific multicast, as omping -m: join (PEER, GROUP) for each named "
        "peer, and hear only them (232/8, ff3x::)",
    )
    shown = p.add_mutually_exclusive_group()
    shown.add_argument("--json", action="store_true", help="print the results as JSON")
    shown.add_argument(
        "--quiet", "-q", action="store_true", help="no line per answer, only the table"
    )
    p.set_defaults(handler=cmd_ping)


_Dest = tuple[str, int] | tuple[str, int, int, int]


@dataclass(frozen=True, slots=True)
class _Unicast:
    """A unicast socket bound to one local address of one interface, on the port."""

    sock: socket.socket
    interface: str
    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    index: int


def _addresses(
    iface: Interface, family: socket.AddressFamily
) -> list[ipaddress.IPv4Interface | ipaddress.IPv6Interface]:
    return list(iface.ipv4 if family == socket.AF_INET else iface.ipv6)


@contextlib.contextmanager
def _unicast_sockets(
    interfaces: tuple[Interface, ...], family: socket.AddressFamily, port: int
) -> Iterator[list[_Unicast]]:
    """One socket per local address, bound to (address, port).

    The endpoint's receive socket is bound to the wildcard address on the same
    port; the kernel prefers the socket bound to the exact destination for
    unicast, and multicast only matches the wildcard one (as omping does).
    """
    socks: list[_Unicast] = []
    try:
        for iface in interfaces:
            for addr in _addresses(iface, family):
                scope = iface.index if addr.ip.is_link_local else 0
                sock = _net.open_unicast(str(addr.ip), port, scope)
                socks.append(_Unicast(sock, iface.name, addr.network, iface.index))
        yield socks
    finally:
        for u in socks:
            u.sock.close()


def _parse_peer(text: str, family: socket.AddressFamily) -> tuple[str, str | None]:
    """``10.0.0.2`` or ``fe80::2%eth1`` -> (address, interface or None)."""
    host, _, zone = text.partition("%")
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"peer {text!r} is not an IP address") from None
    if addr.is_multicast:
        raise ValueError(
            f"peer {text!r} is a multicast address; name peers by their unicast "
            "address (the group is GROUP:PORT)"
        )
    if (addr.version == 4) != (family == socket.AF_INET):
        raise ValueError(f"peer {text!r} is not of the group's address family")
    return str(addr), zone or None


class _Pinger:
    def __init__(
        self,
        ep: MulticastEndpoint,
        unicast: list[_Unicast],
        port: int,
        on_answer: Callable[[Answer], None] = lambda _: None,
    ) -> None:
        self.ep = ep
        self.on_answer = on_answer
        self.unicast = unicast
        self.port = port
        self.stats = PingStats(secrets.randbits(32) or 1)
        #: Peer -> (unicast socket, destination) for its unicast probes.
        self.routes: dict[Peer, tuple[_Unicast, _Dest]] = {}

    # -- peers ---------------------------------------------------------------------

    def name_peer(self, address: str, zone: str | None) -> None:
        route = self._route(address, zone)
        peer = self.stats.add_peer(address, route[0].interface if route else None)
        if route is not None:
            self.routes[peer] = route

    def _route(
        self, address: str, zone: str | None, index: int = 0
    ) -> tuple[_Unicast, _Dest] | None:
        addr = ipaddress.ip_address(address)
        for u in self.unicast:
            on_link = u.interface == zone or (zone is None and u.index == index and index)
            if addr in u.network or on_link:
                if addr.version == 6:
                    scope = u.index if addr.is_link_local else 0
                    return u, (address, self.port, 0, scope)
                return u, (address, self.port)
        return None

    def _heard(
        self, msg: Message, source: tuple[object, ...], interface: str, index: int
    ) -> Peer | None:
        peer = self.stats.heard(msg.sender, str(source[0]), interface)
        if peer is not None and peer not in self.routes:
            route = self._route(peer.address, None, index)
            if route is not None:
                self.routes[peer] = route
        return peer

    # -- receiving -----------------------------------------------------------------

    def on_multicast(self, batch: list[Datagram]) -> None:
        now = time.monotonic_ns()
        for dgram in batch:
            msg = decode(dgram.data)
            if msg is None or msg.kind != MULTICAST:
                continue
            index = next((i.index for i in self.ep.interfaces if i.name == dgram.interface), 0)
            peer = self._heard(msg, dgram.source, dgram.interface, index)
            if peer is None:
                continue
            if msg.type == PROBE:
                # Answer out of the interface it came in on: that link is under test.
                with contextlib.suppress(MulticastError, ValueError):
                    self.ep.send_nowait(
                        encode(msg.answer(self.stats.me)), interface=dgram.interface
                    )
            else:
                self._answered(peer, dgram.interface, msg, now)

    def on_unicast(self, u: _Unicast) -> None:
        while True:
            try:
                data, source = u.sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionRefusedError:
                # The ICMP error of an earlier probe to a peer not running (yet).
                continue
            except OSError:
                return  # nothing else is expected here; try again when readable
            now = time.monotonic_ns()
            msg = decode(data)
            if msg is None or msg.kind != UNICAST:
                continue
            peer = self._heard(msg, source, u.interface, u.index)
            if peer is None:
                continue
            if msg.type == PROBE:
                with contextlib.suppress(OSError):
                    u.sock.sendto(encode(msg.answer(self.stats.me)), source)
            else:
                self._answered(peer, u.interface, msg, now)

    def _answered(self, peer: Peer, interface: str, msg: Message, now: int) -> None:
        answer = self.stats.answered(peer, interface, msg, now)
        if answer is not None:
            self.on_answer(answer)

    # -- sending -------------------------------------------------------------------

    def probe(self) -> None:
        stats = self.stats
        seq = stats.next_seq()
        mcast = encode(Message(PROBE, MULTICAST, stats.me, 0, seq, time.monotonic_ns()))
        for result in self.ep.send_all_nowait(mcast):
            if result.ok:
                stats.sent(MULTICAST, result.interface, seq)
        for peer in stats.peers:
            route = self.routes.get(peer)
            if route is None:
                continue
            u, dest = route
            probe = encode(Message(PROBE, UNICAST, stats.me, 0, seq, time.monotonic_ns()))
            with contextlib.suppress(OSError):
                u.sock.sendto(probe, dest)
                stats.sent(UNICAST, u.interface, seq, peer)


async def _ping(
    group: Group, port: int, peers: list[str], args: argparse.Namespace, stop: asyncio.Event
) -> list[dict[str, object]]:
    # SSM (omping -m): the peers' own addresses are the sources joined.
    sources = [_parse_peer(p, group.family)[0] for p in peers] if args.ssm else None
    async with MulticastEndpoint(
        str(group),
        port,
        interfaces=args.interface or None,
        ttl=args.ttl,
        queue_size=4096,
        sources=sources,
    ) as ep:
        if not ep.interfaces:
            raise MulticastError(f"no interface can carry {group} on this host now")
        with _unicast_sockets(ep.interfaces, group.family, port) as unicast:
            show = args.json or args.quiet
            pinger = _Pinger(ep, unicast, port, (lambda _: None) if show else _print_answer)
            for text in peers:
                pinger.name_peer(*_parse_peer(text, group.family))
            loop = asyncio.get_running_loop()
            for u in unicast:
                loop.add_reader(u.sock.fileno(), pinger.on_unicast, u)
            sub = ep.subscribe()
            reader = asyncio.create_task(_pump(sub, pinger))
            names = ", ".join(i.name for i in ep.interfaces)
            status = sys.stderr if args.json else sys.stdout
            print(f"pinging {host_port(str(group), port)} on {names}", file=status, flush=True)
            try:
                start = loop.time()
                for n in itertools.count():
                    # Past the count only for peers that started late, and at most
                    # as long again.
                    if n >= args.count and (
                        pinger.stats.finished(args.count) or n >= 2 * args.count
                    ):
                        break
                    delay = start + n * args.interval - loop.time()
                    finished, _ = await wait_or_stop(asyncio.sleep(max(delay, 0)), stop)
                    if not finished:
                        break
                    pinger.probe()
                wait = args.wait if args.wait is not None else max(2 * args.interval, 1.0)
                if not stop.is_set():
                    await wait_or_stop(asyncio.sleep(args.interval + wait), stop)
            finally:
                for u in unicast:
                    loop.remove_reader(u.sock.fileno())
                sub.close()
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
            return pinger.stats.results(args.count)


def _print_answer(answer: Answer) -> None:
    print(answer_line(answer), flush=True)


async def _pump(sub: Subscription, pinger: _Pinger) -> None:
    while batch := await sub.get_batch():
        pinger.on_multicast(batch)


_V4_TARGET = re.compile(r"^\d+\.\d+\.\d+\.\d+:\d*$")


def split_operands(operands: list[str]) -> tuple[list[tuple[Group, int]], list[str]]:
    """GROUP:PORT operands (one per family) and the peers; ValueError with a reason.

    ``239.1.1.1:4321`` and ``[ff12::1]:4321`` are groups; any other word a peer.
    """
    targets, peers = [], []
    for text in operands:
        if text.startswith("[") or _V4_TARGET.match(text):
            targets.append(parse_group_port(text))
        else:
            peers.append(text)
    families = [g.family for g, _ in targets]
    if len(set(families)) != len(families):
        raise ValueError("give at most one group per address family (one IPv4, one IPv6)")
    for text in peers:
        host = text.partition("%")[0]
        try:
            family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
        except ValueError:
            raise ValueError(f"peer {text!r} is not an IP address") from None
        if family not in families:
            _parse_peer(text, families[0])  # multicast peers are refused here first
            raise ValueError(f"peer {text!r} is not of the group's address family")
        _parse_peer(text, family)
    return targets, peers


def _peers_of(family: socket.AddressFamily, peers: list[str]) -> list[str]:
    def of(text: str) -> bool:
        version = ipaddress.ip_address(text.partition("%")[0]).version
        return (version == 4) == (family == socket.AF_INET)

    return [p for p in peers if of(p)]


async def _ping_all(
    targets: list[tuple[Group, int]],
    peers: list[str],
    args: argparse.Namespace,
    stop: asyncio.Event,
) -> list[dict[str, object]]:
    """Each family's ping at once; their results, IPv4 first."""
    runs = [_ping(g, p, _peers_of(g.family, peers), args, stop) for g, p in targets]
    results: list[dict[str, object]] = []
    for rows in await asyncio.gather(*runs):
        results += rows
    return results


def cmd_ping(args: argparse.Namespace) -> int:
    try:
        targets, peers = split_operands([args.target, *args.peers])
        if args.ssm and not peers:
            raise ValueError("--ssm joins (PEER, GROUP): name the peers")
    except ValueError as exc:
        return contract.usage(str(exc))
    try:
        results = run_until_stopped(lambda stop: _ping_all(targets, peers, args, stop))
    except ValueError as exc:  # an argument the library refused: a bad -i
        return contract.usage(cli_words(str(exc)))
    except MulticastError as exc:
        return contract.failed(cli_words(str(exc)))
    if args.json:
        print(json.dumps({"results": results}, indent=2))
    elif not results:
        # Nothing to tabulate: the one line says what went wrong.
        return contract.failed(NO_PEERS)
    else:
        print(table(results))
        print(summary_line(results))
    return contract.FAILED if broken(results) or not results else contract.OK
