"""Read the host for ``doctor`` and ``interfaces``: the thin, impure layer.

Files are read through /proc/thread-self so a thread moved into another network
namespace (as ``Lab.inside()`` does) reads that namespace, not the process's.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator, Sequence

from .._discovery import read_snapshot
from .._igmp import QuerySeen, parse_query
from .._keeper import parse_beacons
from .._model import Interface
from .._platform.linux import procnet
from .._platform.linux.procfs import proc_net_path, read_text, sysctl
from .capture import CaptureUnavailable, capture_queries
from .doctor import HostState

__all__ = ["collect", "read_igmp", "read_igmp6", "read_text"]


def _sysctl_int(path: str) -> int | None:
    text = sysctl(path)
    try:
        return int(text.strip()) if text is not None else None
    except ValueError:
        return None


def read_igmp() -> tuple[procnet.IgmpDevice, ...]:
    return procnet.parse_igmp(read_text(proc_net_path("igmp")) or "")


def read_igmp6() -> tuple[procnet.Membership, ...]:
    return procnet.parse_igmp6(read_text(proc_net_path("igmp6")) or "")


def _rpf_counter() -> int | None:
    text = read_text(proc_net_path("netstat"))
    return procnet.counter(procnet.parse_netstat(text), "IPReversePathFilter") if text else None


def _conf(interfaces: Sequence[Interface], key: str) -> dict[str, int]:
    values: dict[str, int] = {}
    for name in ("all", *(i.name for i in interfaces)):
        value = _sysctl_int(f"net/ipv4/conf/{name}/{key}")
        if value is not None:
            values[name] = value
    return values


# Far more than any sane querier sends in a doctor window (one per 125 s by default).
_MAX_QUERIES = 4096


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM ends the watch like Ctrl-C does, instead of killing the process silently."""
    try:
        old = signal.signal(signal.SIGTERM, _interrupt)
    except ValueError:
        # Not the main thread (tests call main() from others): nothing to install.
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def collect(duration: float, *, watch_queries: bool = True) -> HostState:
    """Read everything doctor needs, watching IGMP queries for ``duration`` seconds."""
    interfaces = read_snapshot()
    before = _rpf_counter()
    queries: list[QuerySeen] = []
    skipped: str | None = None

    def on_packet(interface: str, packet: bytes, _when: float) -> None:
        query = parse_query(interface, packet)
        # Fed from the network: a query flood must not grow doctor without bound.
        if query is not None and len(queries) < _MAX_QUERIES:
            queries.append(query)

    start = time.monotonic()
    try:
        with _sigterm_as_interrupt():
            if watch_queries:
                try:
                    capture_queries(duration, on_packet)
                except CaptureUnavailable as exc:
                    skipped = str(exc)
                    time.sleep(duration)
            else:
                skipped = "watching for queries was turned off"
                time.sleep(duration)
    except KeyboardInterrupt:
        # Stopped early (Ctrl-C, SIGTERM): diagnose what was seen until then.
        duration = round(time.monotonic() - start, 1)
    after = _rpf_counter()
    routes = procnet.parse_route(read_text(proc_net_path("route")) or "")
    return HostState(
        interfaces=interfaces,
        igmp=read_igmp(),
        igmp6=read_igmp6(),
        rp_filter=_conf(interfaces, "rp_filter"),
        force_igmp_version=_conf(interfaces, "force_igmp_version"),
        igmp_max_memberships=_sysctl_int("net/ipv4/igmp_max_memberships"),
        routes=routes,
        rpf_drops_before=before,
        rpf_drops_after=after,
        queries=None if skipped else tuple(queries),
        capture_skipped=skipped,
        duration=duration,
        helpers=parse_beacons(read_text(proc_net_path("unix")) or ""),
    )
