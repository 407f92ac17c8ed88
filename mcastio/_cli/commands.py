"""The ``listen``, ``send``, ``interfaces`` and ``doctor`` subcommands.

Formatting helpers are pure and take the values to print; the ``cmd_*``
functions do the I/O. Output is meant for an 80-column terminal.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime
import json
import sys
import textwrap
from collections.abc import Sequence
from typing import TextIO

from .._endpoint import MulticastEndpoint
from .._errors import MulticastError
from .._model import (
    Datagram,
    Group,
    Interface,
    SendResult,
    ineligibility,
    is_eligible,
    parse_group,
)
from .doctor import Finding

__all__ = [
    "Tally",
    "cmd_doctor",
    "cmd_interfaces",
    "cmd_listen",
    "cmd_send",
    "datagram_json",
    "datagram_line",
    "parse_group_port",
]

WIDTH = 80


def parse_group_port(text: str) -> tuple[Group, int]:
    """``239.1.2.3:5000`` or ``[ff02::fb]:5353`` -> (group, port); ValueError otherwise."""
    host, sep, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{text!r}: write IPv6 groups in brackets, e.g. '[ff02::fb]:5353'")
    if not sep or not host:
        raise ValueError(f"{text!r}: expected GROUP:PORT, e.g. '239.255.0.1:5000'")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"{text!r}: port {port_text!r} is not a number") from None
    if not 1 <= port <= 65535:
        raise ValueError(f"{text!r}: port must be from 1 to 65535")
    return parse_group(host), port


def _source_text(source: tuple[str, int] | tuple[str, int, int, int]) -> str:
    host = source[0]
    return f"[{host}]:{source[1]}" if ":" in host else f"{host}:{source[1]}"


def preview(data: bytes, width: int) -> str:
    """Printable ASCII as is, anything else as '.', cut to ``width`` with '…'."""
    text = "".join(chr(b) if 32 <= b < 127 else "." for b in data[: width + 1])
    return text if len(text) <= width else text[: max(width - 1, 0)] + "~"


def datagram_line(dgram: Datagram, when: datetime.datetime) -> str:
    head = (
        f"{when:%H:%M:%S.%f}"[:12]
        # A reply (unicast to a transmit socket) has no group.
        + f" {dgram.interface:<8} {_source_text(dgram.source):<21} {dgram.group or 'reply':<15}"
        + f" {len(dgram.data):>5} "
    )
    if len(head) + 8 > WIDTH:
        # Long IPv6 addresses: the preview goes on its own indented line.
        return head.rstrip() + "\n    " + preview(dgram.data, WIDTH - 4)
    return head + preview(dgram.data, WIDTH - len(head))


def datagram_json(dgram: Datagram, when: datetime.datetime) -> str:
    return json.dumps(
        {
            "time": when.isoformat(),
            "interface": dgram.interface,
            "source": _source_text(dgram.source),
            "group": dgram.group,
            "length": len(dgram.data),
            "data": base64.b64encode(dgram.data).decode("ascii"),
        }
    )


# Distinct sources remembered per interface: the set is fed from the network, so
# past this the summary says "1024+" instead of growing.
_MAX_SOURCES = 1024


class _IfCount:
    __slots__ = ("datagrams", "octets", "sources")

    def __init__(self) -> None:
        self.datagrams = 0
        self.octets = 0
        self.sources: set[str] = set()


class Tally:
    """Per-interface counts for the exit summary (a running tally, not a value)."""

    __slots__ = ("counts", "interfaces")

    def __init__(self, interfaces: Sequence[str] = ()) -> None:
        self.interfaces = list(interfaces)
        self.counts: dict[str, _IfCount] = {}

    def add(self, dgram: Datagram) -> None:
        count = self.counts.setdefault(dgram.interface, _IfCount())
        count.datagrams += 1
        count.octets += len(dgram.data)
        if len(count.sources) < _MAX_SOURCES:
            count.sources.add(dgram.source[0])

    @property
    def total(self) -> int:
        return sum(c.datagrams for c in self.counts.values())

    def summary(self, group: str, port: int) -> str:
        lines = [f"summary for {group}:{port}:"]
        names = list(self.interfaces) + [n for n in self.counts if n not in self.interfaces]
        for name in names:
            c = self.counts.get(name, _IfCount())
            lines.append(
                f"  {name:<10} {c.datagrams:>7} datagram{'s' if c.datagrams != 1 else ' '} "
                f"{c.octets:>10} bytes "
                f"{len(c.sources):>4}{'+' if len(c.sources) >= _MAX_SOURCES else ''} "
                f"source{'s' if len(c.sources) != 1 else ''}"
            )
        if not names:
            lines.append("  (joined on no interface)")
        return "\n".join(lines)


def _error(message: str) -> int:
    print(f"mcastio: {message}", file=sys.stderr)
    return 2


# -- listen ---------------------------------------------------------------------------


async def _listen(
    group: Group, port: int, args: argparse.Namespace, tally: Tally, out: TextIO
) -> None:
    async with MulticastEndpoint(
        str(group), port, interfaces=args.interface or None, queue_size=4096
    ) as ep:
        tally.interfaces = [i.name for i in ep.interfaces]
        status = sys.stderr if args.json else out
        if not tally.interfaces:
            # The endpoint would wait for one to appear; a listener that hears
            # nothing for a reason it never states is the silent failure we avoid.
            raise MulticastError(f"no interface can carry {group} on this host now")
        print(
            f"listening on {group}:{port} on {', '.join(tally.interfaces)}",
            file=status,
            flush=True,
        )
        loop = asyncio.get_running_loop()
        deadline = None if args.duration is None else loop.time() + args.duration
        sub = ep.subscribe()
        while args.count is None or tally.total < args.count:
            timeout = None if deadline is None else deadline - loop.time()
            if timeout is not None and timeout <= 0:
                break
            try:
                batch = await asyncio.wait_for(sub.get_batch(), timeout)
            except asyncio.TimeoutError:
                break
            if not batch:
                break
            for dgram in batch:
                if args.count is not None and tally.total >= args.count:
                    break
                tally.add(dgram)
                when = datetime.datetime.now(datetime.timezone.utc)
                line = (
                    datagram_json(dgram, when)
                    if args.json
                    else datagram_line(dgram, when.astimezone())
                )
                print(line, file=out, flush=True)


def cmd_listen(args: argparse.Namespace) -> int:
    try:
        group, port = parse_group_port(args.target)
    except ValueError as exc:
        return _error(str(exc))
    tally = Tally()
    code = 0
    try:
        asyncio.run(_listen(group, port, args, tally, sys.stdout))
    except KeyboardInterrupt:
        # Ctrl-C is how a listener normally ends; the summary below is the point.
        pass
    except (MulticastError, ValueError) as exc:
        print(f"mcastio: {exc}", file=sys.stderr)
        code = 1
    print(tally.summary(str(group), port), file=sys.stderr if args.json else sys.stdout)
    return code


# -- send -----------------------------------------------------------------------------


def result_line(round_no: int, result: SendResult) -> str:
    if result.ok:
        return f"#{round_no:<4} {result.interface:<10} sent {result.sent} bytes"
    err = result.error
    text = f"{err.strerror or err}" if isinstance(err, OSError) else str(err)
    return f"#{round_no:<4} {result.interface:<10} FAILED: {text}"[:WIDTH]


async def _send(group: Group, port: int, args: argparse.Namespace, out: TextIO) -> bool:
    payload = args.message.encode()
    ok = True
    async with MulticastEndpoint(
        str(group),
        port,
        interfaces=args.interface or None,
        ttl=args.ttl,
        loopback=args.loopback,
    ) as ep:
        for n in range(1, args.count + 1):
            if n > 1:
                await asyncio.sleep(args.interval)
            # Read each round: the endpoint follows interfaces while it runs.
            joined = {i.name for i in ep.interfaces}
            if not joined:
                print(f"#{n:<4} no interface can carry {group} right now", file=out, flush=True)
                ok = False
                continue
            if args.interface:
                results = []
                for name in args.interface:
                    if name not in joined:
                        results.append(
                            SendResult(name, OSError(f"{name} cannot carry {group} right now"))
                        )
                        continue
                    try:
                        results.append(await ep.send(payload, interface=name))
                    except ValueError as exc:  # it went away since the round began
                        results.append(SendResult(name, OSError(str(exc))))
                    except MulticastError as exc:
                        cause = exc.__cause__
                        error = cause if isinstance(cause, OSError) else OSError(str(exc))
                        results.append(SendResult(name, error))
            else:
                results = list(await ep.send_all(payload))
            for result in results:
                ok = ok and result.ok
                print(result_line(n, result), file=out, flush=True)
    return ok


def cmd_send(args: argparse.Namespace) -> int:
    try:
        group, port = parse_group_port(args.target)
    except ValueError as exc:
        return _error(str(exc))
    if args.count < 1:
        return _error("--count must be at least 1")
    if not 0 <= args.ttl <= 255:
        return _error("--ttl must be from 0 to 255")
    try:
        ok = asyncio.run(_send(group, port, args, sys.stdout))
    except (MulticastError, ValueError) as exc:
        print(f"mcastio: {exc}", file=sys.stderr)
        return 1
    return 0 if ok else 1


# -- interfaces -----------------------------------------------------------------------

_V4 = parse_group("239.255.255.250")
_V6_LINK = parse_group("ff02::fb")
_V6_WIDE = parse_group("ff05::fb")


def _flags(iface: Interface) -> list[str]:
    flags = []
    for flag, on in (
        ("up", iface.up),
        ("running", iface.running),
        ("multicast", iface.multicast),
        ("loopback", iface.loopback),
    ):
        if on:
            flags.append(flag)
    return flags


def _eligibility(iface: Interface) -> dict[str, bool]:
    return {
        "ipv4": is_eligible(iface, _V4),
        "ipv6-link-local": is_eligible(iface, _V6_LINK),
        "ipv6": is_eligible(iface, _V6_WIDE),
    }


def _why_not(iface: Interface) -> str:
    why = ineligibility(iface, None)
    return why[0] if why else "no address"


def interfaces_json(
    snapshot: Sequence[Interface],
    memberships: dict[str, list[dict[str, object]]],
) -> dict[str, object]:
    return {
        "interfaces": [
            {
                "name": i.name,
                "index": i.index,
                "addresses": [str(a) for a in (*i.ipv4, *i.ipv6)],
                "flags": _flags(i),
                "eligible": _eligibility(i),
                "default_route": i.is_default,
                "memberships": memberships.get(i.name, []),
            }
            for i in snapshot
        ]
    }


def _wrap(prefix: str, items: Sequence[str], indent: int) -> list[str]:
    text = " ".join(items) or "-"
    return textwrap.wrap(
        text,
        WIDTH,
        initial_indent=prefix,
        subsequent_indent=" " * indent,
        break_on_hyphens=False,
    ) or [prefix]


def interfaces_text(
    snapshot: Sequence[Interface], memberships: dict[str, list[dict[str, object]]]
) -> str:
    lines = ["  IDX NAME          ELIGIBLE  FLAGS", "      ADDRESSES / GROUPS JOINED BY THE KERNEL"]
    for i in snapshot:
        elig = _eligibility(i)
        families = [f for f, key in (("v4", "ipv4"), ("v6", "ipv6-link-local")) if elig[key]]
        eligible = "+".join(families) if families else "no"
        mark = "*" if i.is_default else " "
        lines.append(f"{mark}{i.index:>4} {i.name:<13} {eligible:<9} {','.join(_flags(i)) or '-'}")
        if not families:
            lines[-1] += f" ({_why_not(i)})"
        lines.extend(_wrap("      ", [str(a) for a in (*i.ipv4, *i.ipv6)], 6))
        groups = [str(m["group"]) for m in memberships.get(i.name, [])]
        if groups:
            lines.extend(_wrap("      joined: ", groups, 14))
    lines.append("* carries the default route; eligible: mcastio joins v4/v6 groups there")
    return "\n".join(lines)


def _memberships() -> dict[str, list[dict[str, object]]]:
    from .hoststate import read_igmp, read_igmp6

    result: dict[str, list[dict[str, object]]] = {}
    for device in read_igmp():
        for m in device.groups:
            result.setdefault(m.interface, []).append(
                {"group": str(m.group), "family": "ipv4", "users": m.users, "igmp": device.querier}
            )
    for m in read_igmp6():
        result.setdefault(m.interface, []).append(
            {"group": str(m.group), "family": "ipv6", "users": m.users}
        )
    return result


def cmd_interfaces(args: argparse.Namespace) -> int:
    from .._discovery import read_snapshot

    snapshot = read_snapshot()
    memberships = _memberships()
    if args.json:
        print(json.dumps(interfaces_json(snapshot, memberships), indent=2))
    else:
        print(interfaces_text(snapshot, memberships))
    return 0


# -- doctor ---------------------------------------------------------------------------


def finding_text(finding: Finding) -> str:
    where = f" [{finding.interface}]" if finding.interface else ""
    lines = [f"{finding.severity.upper():<8}{finding.id}{where}"]
    lines += textwrap.wrap(finding.message, WIDTH, initial_indent="  ", subsequent_indent="  ")
    for item in finding.evidence:
        lines += textwrap.wrap(item, WIDTH, initial_indent="  - ", subsequent_indent="    ")
    if finding.fix:
        lines += textwrap.wrap(
            finding.fix, WIDTH, initial_indent="  fix: ", subsequent_indent="       "
        )
    return "\n".join(lines)


def cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import diagnose
    from .hoststate import collect

    group = None
    if args.group is not None:
        try:
            group = parse_group(args.group)
        except ValueError as exc:
            # Also accept the GROUP:PORT form that listen and send take.
            try:
                group = parse_group_port(args.group)[0]
            except ValueError:
                return _error(str(exc))
    if args.duration < 0:
        return _error("--duration must not be negative")
    if not args.json:
        print(
            f"watching the host for {args.duration:g} s"
            + (f" for {group}" if group else "")
            + " ...",
            file=sys.stderr,
            flush=True,
        )
    try:
        state = collect(args.duration)
    except MulticastError as exc:
        print(f"mcastio: {exc}", file=sys.stderr)
        return 1
    findings = diagnose(state, group)
    if args.json:
        print(json.dumps({"findings": [f.to_json() for f in findings]}, indent=2))
    else:
        for finding in findings:
            print(finding_text(finding))
            print()
        counts = {s: sum(f.severity == s for f in findings) for s in ("error", "warning", "info")}
        print(", ".join(f"{n} {s}{'s' if n != 1 else ''}" for s, n in counts.items()))
    return 1 if any(f.severity == "error" for f in findings) else 0
