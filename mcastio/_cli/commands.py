"""The ``interfaces`` and ``doctor`` subcommands.

Formatting helpers are pure and take the values to print; the ``cmd_*``
functions do the I/O. Output is meant for an 80-column terminal.
"""

from __future__ import annotations

import argparse
import json
import textwrap
from collections.abc import Sequence

from .._errors import MulticastError
from .._model import Group, Interface, ineligibility, is_eligible, parse_group
from . import contract, validate
from .doctortext import findings_text
from .fmt import WIDTH, parse_group_port


def _error(message: str) -> int:
    return contract.usage(message)


def parse_doctor_group(text: str) -> Group:
    """``239.1.2.3``, or the ``GROUP:PORT`` that listen and send take; ValueError."""
    try:
        return parse_group(text)
    except ValueError as exc:
        # A port was given (digits after the last colon, and an IPv4 dot or IPv6
        # brackets before it): the port's own mistake is the one to report.
        host, sep, port = text.rpartition(":")
        if sep and port.isdigit() and (host.startswith("[") or "." in host):
            return parse_group_port(text)[0]
        raise ValueError(str(exc)) from None


__all__ = ["cmd_doctor", "cmd_interfaces", "register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    interfaces = sub.add_parser(
        "interfaces",
        help="list interfaces, their eligibility and the kernel's group memberships",
    )
    interfaces.add_argument("--json", action="store_true", help="machine-readable output")
    interfaces.set_defaults(handler=cmd_interfaces)

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
        type=validate.seconds,
        default=10.0,
        metavar="S",
        help="seconds to watch (default 10)",
    )
    doctor.add_argument("--json", action="store_true", help='print {"findings": [...]}')
    doctor.set_defaults(handler=cmd_doctor)


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


def cmd_doctor(args: argparse.Namespace) -> int:
    from .._platform import capabilities, unavailable
    from .doctor import diagnose
    from .hoststate import collect

    group = None
    if args.group is not None:
        try:
            group = parse_doctor_group(args.group)
        except ValueError as exc:
            return _error(str(exc))
    caps = capabilities()
    if not caps.procfs:
        return contract.failed(str(unavailable("mcastio doctor (it reads /proc and /sys)", caps)))
    if not args.json:
        print(
            f"watching the host for {args.duration:g} s"
            + (f" for {group}" if group else "")
            + " ...",
            flush=True,
        )
    try:
        state = collect(args.duration)
    except MulticastError as exc:
        return contract.failed(str(exc))
    findings = diagnose(state, group)
    if args.json:
        print(json.dumps({"findings": [f.to_json() for f in findings]}, indent=2))
    else:
        for block in findings_text(findings):
            print(block)
            print()
        from .._drain import describe
        from .._platform import describe as describe_platform

        platform = describe_platform(caps)
        print(textwrap.fill(f"platform: {platform}", WIDTH, subsequent_indent="  "))
        print(textwrap.fill(f"receive path: {describe()}", WIDTH, subsequent_indent="  "))
        counts = {s: sum(f.severity == s for f in findings) for s in ("error", "warning", "info")}
        print(", ".join(f"{n} {s}{'s' if n != 1 else ''}" for s, n in counts.items()))
    return 1 if any(f.severity == "error" for f in findings) else 0
