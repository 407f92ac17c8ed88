"""Many links, many groups, many endpoints: what starting them costs, in one process.

Needs root. Builds a namespace lab of its own: a host namespace with N veth links,
all into one peer namespace (``ip -batch``, so a thousand links take seconds, not
minutes). Every case runs in a fresh child process inside the host namespace, on
one event loop, and reports:

- the start time of every endpoint (``gather`` of the starts), and the longest
  stall of the event loop meanwhile, seen by a probe that wakes every millisecond
  (the constructors run before it is armed, and are timed on their own: JSON
  ``construct_ms``);
- the descriptors the endpoints opened, by kind (netlink, raw, receive = UDP bound
  to the group's port, transmit = other UDP, other), the tasks and the RSS added;
- correctness: the peer sends one datagram per (link, group), each must be
  delivered exactly once, by the endpoint that holds its group, with its interface;
  then every endpoint's ``send_all`` must reach the peer on every link;
- the time to close everything.

Then a storm: 2,000 addresses added to one link at once under 100 endpoints (N = 8),
timed until every endpoint uses them all, with the re-plans each endpoint made.

::

    sudo python benchmarks/scale.py                  # N = 8 with G = 1, 10, 100
    sudo python benchmarks/scale.py --large          # also N = 256 and 1,024 with G = 4
    sudo python benchmarks/scale.py --compare-with /tmp/before   # another checkout, same run
    sudo python benchmarks/scale.py --only-storm     # only the 2,000-address storm

The stall is the worst round (``med``: the median round); ``gc2 ms`` the longest
collection of the garbage collector's oldest generation meanwhile, which the probe
sees too (``--gc off`` measures the stall without collections).

``--compare-with TREE`` runs the same cases with the ``mcastio`` package of TREE
(for instance ``git archive <commit> | tar -x -C TREE``), side by side. Medians of
``--rounds`` runs (default 3); the correctness columns must be full in every run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import ctypes.util
import gc
import json
import os
import resource
import secrets
import socket
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PORT = 5700
GROUP_BASE = "239.77"
SETTLE_TIMEOUT = 10.0
_CLONE_NEWNET = 0x40000000
#: Not in Python 3.11's socket module (include/uapi/linux/in.h).
IP_PKTINFO = 8


def groups(count: int) -> list[str]:
    return [f"{GROUP_BASE}.{i // 250}.{i % 250 + 1}" for i in range(count)]


# -- the lab -----------------------------------------------------------------------------


class ScaleLab:
    """A host namespace and a peer namespace joined by ``links`` veth pairs."""

    def __init__(self, links: int) -> None:
        tag = f"mcs-{os.getpid()}-{secrets.token_hex(3)}"
        self.links = links
        self.host = f"{tag}-h"
        self.peer = f"{tag}-p"
        self._made: list[str] = []

    def __enter__(self) -> ScaleLab:
        try:
            self._build()
        except BaseException:
            self.destroy()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    def _build(self) -> None:
        for ns in (self.host, self.peer):
            subprocess.run(["ip", "netns", "add", ns], check=True)
            self._made.append(ns)
            for line in (
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ):
                self._sh(ns, "sysctl", "-qw", line)
        # The peer holds one socket per group joined on every link: past the cap of 20.
        self._sh(self.peer, "sysctl", "-qw", "net.ipv4.igmp_max_memberships=1000000")
        host: list[str] = ["link set lo up"]
        peer: list[str] = ["link set lo up"]
        for n in range(self.links):
            host.append(f"link add eth{n} type veth peer name veth{n} netns {self.peer}")
        self._batch(self.host, host)
        host = []
        for n in range(self.links):
            a, b = 100 + n // 256, n % 256
            host += [f"addr add 10.{a}.{b}.1/24 dev eth{n}", f"link set eth{n} up"]
            peer += [f"addr add 10.{a}.{b}.2/24 dev veth{n}", f"link set veth{n} up"]
        self._batch(self.host, host)
        self._batch(self.peer, peer)

    def _sh(self, ns: str, *argv: str) -> None:
        subprocess.run(["ip", "netns", "exec", ns, *argv], check=True, capture_output=True)

    def _batch(self, ns: str, lines: Sequence[str]) -> None:
        subprocess.run(
            ["ip", "-n", ns, "-batch", "-"],
            input="\n".join(lines) + "\n",
            text=True,
            check=True,
            capture_output=True,
        )

    def destroy(self) -> None:
        for ns in reversed(self._made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        self._made.clear()


# -- the child: one case, in the host namespace ---------------------------------------------


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextmanager
def inside(ns: str) -> Iterator[None]:
    target = os.open(f"/run/netns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(original)
    finally:
        os.close(target)
        os.close(original)


def _inodes(table: str, column: int) -> dict[int, list[str]]:
    rows: dict[int, list[str]] = {}
    try:
        with open(f"/proc/self/net/{table}", encoding="ascii") as f:
            lines = f.read().splitlines()[1:]
    except OSError:
        return rows
    for line in lines:
        parts = line.split()
        if len(parts) > column:
            rows[int(parts[column])] = parts
    return rows


def descriptors() -> dict[str, set[int]]:
    """This process's descriptors by kind, as sets of descriptor numbers."""
    netlink = _inodes("netlink", 9)
    raw = _inodes("raw", 9) | _inodes("raw6", 9)
    udp = _inodes("udp", 9) | _inodes("udp6", 9)
    kinds: dict[str, set[int]] = {
        k: set() for k in ("netlink", "raw", "receive", "transmit", "other")
    }
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        if target.startswith("socket:["):
            ino = int(target[8:-1])
            if ino in netlink:
                kinds["netlink"].add(fd)
                continue
            if ino in raw:
                kinds["raw"].add(fd)
                continue
            if ino in udp:
                port = int(udp[ino][1].rsplit(":", 1)[1], 16)
                kinds["receive" if port == PORT else "transmit"].add(fd)
                continue
        kinds["other"].add(fd)
    return kinds


def rss_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class LagProbe:
    """The longest time the event loop let a 1 ms sleep overrun, while armed; and
    the longest garbage collection of generation 2 meanwhile (a pause the probe
    also sees, set by the process's heap rather than by any one start)."""

    def __init__(self) -> None:
        self.worst = 0.0
        self.armed = False
        self.gc_worst = 0.0
        self.gc_full = 0
        self._gc_began = 0.0
        self._task: asyncio.Task[None] | None = None

    def _gc(self, phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._gc_began = time.perf_counter()
        elif self.armed:
            self.gc_full += 1
            self.gc_worst = max(self.gc_worst, time.perf_counter() - self._gc_began)

    def start(self) -> None:
        gc.callbacks.append(self._gc)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(0.001)
            late = time.perf_counter() - before - 0.001
            if self.armed:
                self.worst = max(self.worst, late)

    async def stop(self) -> None:
        assert self._task is not None
        gc.callbacks.remove(self._gc)
        self._task.cancel()
        await asyncio.wait({self._task})


def _peer_senders(peer: str, links: int) -> list[socket.socket]:
    socks = []
    with inside(peer):
        for n in range(links):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            index = socket.if_nametoindex(f"veth{n}")
            sock.setsockopt(
                socket.IPPROTO_IP,
                socket.IP_MULTICAST_IF,
                struct.pack("=4s4si", bytes(4), bytes(4), index),
            )
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
            sock.setblocking(False)
            socks.append(sock)
    return socks


def _peer_receivers(
    peer: str, links: int, names: Sequence[str]
) -> tuple[list[socket.socket], dict[int, int]]:
    """One socket per group in the peer, joined on every link; and ifindex -> link number."""
    socks = []
    link_of: dict[int, int] = {}
    with inside(peer):
        for n in range(links):
            link_of[socket.if_nametoindex(f"veth{n}")] = n
        for group in names:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
            sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
            sock.bind((group, PORT))
            for index in link_of:
                mreqn = struct.pack("=4s4si", socket.inet_aton(group), bytes(4), index)
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
            sock.setblocking(False)
            socks.append(sock)
    return socks, link_of


def _drain_peer(
    socks: Sequence[socket.socket], link_of: dict[int, int], seen: dict[tuple[int, int], int]
) -> None:
    for g, sock in enumerate(socks):
        while True:
            try:
                _data, anc, _flags, _addr = sock.recvmsg(2048, 256)
            except BlockingIOError:
                break
            for level, kind, value in anc:
                if level == socket.IPPROTO_IP and kind == IP_PKTINFO:
                    index = struct.unpack_from("=i", value)[0]
                    key = (link_of.get(index, -1), g)
                    seen[key] = seen.get(key, 0) + 1


async def run_case(
    peer: str,
    links: int,
    group_count: int,
    mode: str,
    source_port: str = "ephemeral",
    gc_during_start: bool = True,
) -> dict[str, Any]:
    import mcastio

    names = groups(group_count)
    senders = _peer_senders(peer, links)
    peer_rx, link_of = _peer_receivers(peer, links, names)
    probe = LagProbe()
    probe.start()
    await asyncio.sleep(0.01)
    tasks_before = len(asyncio.all_tasks())
    fds_before = descriptors()
    rss_before = rss_kib()
    t0 = time.perf_counter()
    if mode == "one":
        endpoints = [mcastio.MulticastEndpoint(names, PORT, source_port=source_port)]
    else:
        endpoints = [mcastio.MulticastEndpoint(g, PORT, source_port=source_port) for g in names]
    construct_s = time.perf_counter() - t0
    # The probe's wake-up late by the constructors (plain synchronous calls, timed
    # on their own above) comes before it is armed: the stall is the starts'.
    await asyncio.sleep(0.005)
    if not gc_during_start:
        # A measurement only (--gc off): what the stall is without collections.
        gc.disable()
    probe.armed = True
    t0 = time.perf_counter()
    await asyncio.gather(*(ep.start() for ep in endpoints))
    start_s = time.perf_counter() - t0
    # Whatever the starts left for the loop (a watcher's first reconcile) counts too.
    await asyncio.sleep(0.2)
    probe.armed = False
    gc.enable()
    stall_s = probe.worst
    fds_after = descriptors()
    added = {k: len(fds_after[k] - fds_before[k]) for k in fds_after}
    tasks = len(asyncio.all_tasks()) - tasks_before
    rss = rss_kib() - rss_before
    used = [len(ep.interfaces) for ep in endpoints]
    # The loop's shared host monitor, where the tree has one.
    monitor = getattr(endpoints[0], "host_monitor", None)
    monitor_text = None if monitor is None else str(monitor)

    # Receive: one datagram per (link, group), from the peer.
    subs = [ep.subscribe(queue_size=links * group_count + 16) for ep in endpoints]
    want = links * group_count
    received: list[Any] = []
    all_in = asyncio.Event()

    async def collect(sub: Any) -> None:
        async for d in sub:
            received.append(d)
            if len(received) >= want:
                all_in.set()

    collectors = [asyncio.get_running_loop().create_task(collect(sub)) for sub in subs]
    for n, sock in enumerate(senders):
        for g, group in enumerate(names):
            sock.sendto(f"{n} {g}".encode(), (group, PORT))
        if n % 32 == 31:
            await asyncio.sleep(0)
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(all_in.wait(), SETTLE_TIMEOUT)
    await asyncio.sleep(0.05)  # a duplicate arriving late would show here
    for sub in subs:
        sub.close()
    await asyncio.wait(collectors)
    got: dict[tuple[str, str], int] = {}
    wrong = 0
    for d in received:
        n_text, g_text = d.data.decode().split()
        if d.interface != f"eth{n_text}" or d.group != names[int(g_text)]:
            wrong += 1
        got[(n_text, g_text)] = got.get((n_text, g_text), 0) + 1
    once = sum(1 for v in got.values() if v == 1)
    dups = sum(v - 1 for v in got.values() if v > 1)

    # send_all: every endpoint's every group out of every link, seen by the peer.
    seen: dict[tuple[int, int], int] = {}
    for ep in endpoints:
        for group in ep.groups:
            await ep.send_all(b"all", group=group)
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while len(seen) < want and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        _drain_peer(peer_rx, link_of, seen)

    t0 = time.perf_counter()
    for ep in endpoints:
        await ep.aclose()
    close_s = time.perf_counter() - t0
    await probe.stop()
    for sock in (*senders, *peer_rx):
        sock.close()
    return {
        "start_ms": start_s * 1e3,
        "stall_ms": stall_s * 1e3,
        "gc_ms": probe.gc_worst * 1e3,
        "construct_ms": construct_s * 1e3,
        "gc_full": probe.gc_full,
        "close_ms": close_s * 1e3,
        "fds": added,
        "tasks": tasks,
        "rss_kib": rss,
        "interfaces": min(used),
        "want": want,
        "delivered_once": once,
        "duplicates": dups,
        "wrong": wrong,
        "send_all": sum(1 for v in seen.values() if v >= 1),
        "monitor": monitor_text,
    }


STORM = 2000


async def _ip_batch(lines: Sequence[str]) -> None:
    proc = await asyncio.create_subprocess_exec(
        "ip", "-batch", "-", stdin=subprocess.PIPE, stdout=subprocess.DEVNULL
    )
    await proc.communicate(("\n".join(lines) + "\n").encode())
    if proc.returncode != 0:
        raise RuntimeError("ip -batch failed")


def _rounds(endpoints: Sequence[Any]) -> float:
    """Re-plans so far per endpoint: the shared monitor's rounds, or each watcher's."""
    state = getattr(endpoints[0], "host_monitor", None)
    if state is not None:
        return float(state.rounds)
    return float(sum(ep._engine.watcher.rounds for ep in endpoints)) / len(endpoints)


async def run_storm(group_count: int) -> dict[str, Any]:
    """Add STORM addresses to eth0 under G endpoints: time until every one sees them all."""
    import mcastio

    endpoints = [mcastio.MulticastEndpoint(g, PORT) for g in groups(group_count)]
    await asyncio.gather(*(ep.start() for ep in endpoints))
    await asyncio.sleep(0.3)
    before = _rounds(endpoints)
    adds = [f"addr add 10.250.{i // 250}.{i % 250 + 1}/32 dev eth0" for i in range(STORM)]

    def seen() -> int:
        return min(len(next(i for i in ep.interfaces if i.name == "eth0").ipv4) for ep in endpoints)

    t0 = time.perf_counter()
    await _ip_batch(adds)
    added_s = time.perf_counter() - t0
    # Polled: no event says "every endpoint has seen every address".
    while seen() < STORM + 1 and time.perf_counter() - t0 < 30:  # noqa: ASYNC110
        await asyncio.sleep(0.005)
    converged_s = time.perf_counter() - t0
    ok = seen() == STORM + 1
    await asyncio.sleep(0.3)
    rounds = _rounds(endpoints) - before
    for ep in endpoints:
        await ep.aclose()
    await _ip_batch([a.replace("addr add", "addr del") for a in adds])
    return {"added_s": added_s, "converged_s": converged_s, "ok": ok, "rounds": rounds}


def child(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--peer", required=True)
    parser.add_argument("--links", type=int, required=True)
    parser.add_argument("--groups", type=int, required=True)
    parser.add_argument("--mode", choices=("one", "many", "storm"), required=True)
    parser.add_argument("--source-port", default="ephemeral")
    parser.add_argument("--gc", choices=("on", "off"), default="on")
    args = parser.parse_args(argv)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.mode == "storm":
        result = asyncio.run(run_storm(args.groups))
    else:
        result = asyncio.run(
            run_case(
                args.peer, args.links, args.groups, args.mode, args.source_port, args.gc == "on"
            )
        )
    print(json.dumps(result))


# -- the parent ------------------------------------------------------------------------------


def run_child(
    lab: ScaleLab,
    tree: Path,
    groups_: int,
    mode: str,
    source_port: str = "ephemeral",
    gc_mode: str = "on",
) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(tree))
    proc = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            lab.host,
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            "--peer",
            lab.peer,
            "--links",
            str(lab.links),
            "--groups",
            str(groups_),
            "--mode",
            mode,
            "--source-port",
            source_port,
            "--gc",
            gc_mode,
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"case failed ({tree}):\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _median(rows: Sequence[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in rows))


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    fds = {k: statistics.median(r["fds"][k] for r in rows) for k in rows[0]["fds"]}
    return {
        "start_ms": _median(rows, "start_ms"),
        "stall_ms": max(r["stall_ms"] for r in rows),
        "stall_median_ms": _median(rows, "stall_ms"),
        # Every round's figures, in order (the table shows medians, and the worst stall).
        "start_runs_ms": [r["start_ms"] for r in rows],
        "stall_runs_ms": [r["stall_ms"] for r in rows],
        # The longest generation-2 collection while armed, every round (0: none ran).
        "gc_runs_ms": [r.get("gc_ms", 0.0) for r in rows],
        "close_ms": _median(rows, "close_ms"),
        "construct_ms": statistics.median(r.get("construct_ms", 0.0) for r in rows),
        "fds": fds,
        "fds_total": sum(fds.values()),
        "tasks": _median(rows, "tasks"),
        "rss_mib": _median(rows, "rss_kib") / 1024,
        "want": rows[0]["want"],
        # The worst run: correctness must hold in every one.
        "delivered": min(r["delivered_once"] for r in rows),
        "bad": max(r["duplicates"] + r["wrong"] for r in rows),
        "send_all": min(r["send_all"] for r in rows),
        "interfaces": min(r["interfaces"] for r in rows),
        "monitor": rows[-1].get("monitor"),
    }


HEADER = (
    f"{'tree':<8} {'N':>5} {'G':>4} {'as':<12} {'start ms':>9} {'stall ms':>9} {'med':>5} "
    f"{'gc2 ms':>6} "
    f"{'fds':>6} {'nl':>4} {'raw':>4} {'rx':>5} {'tx':>5} {'tasks':>5} {'RSS MiB':>8} "
    f"{'close ms':>9} {'delivered':>11} {'send_all':>11}"
)


def row(label: str, links: int, g: int, mode: str, s: dict[str, Any]) -> str:
    fds = s["fds"]
    how = "1 endpoint" if mode == "one" else f"{g} endpoints"
    ok = f"{s['delivered']}/{s['want']}" + ("!" if s["bad"] else "")
    return (
        f"{label:<8} {links:>5} {g:>4} {how:<12} {s['start_ms']:>9.1f} {s['stall_ms']:>9.1f} "
        f"{s['stall_median_ms']:>5.1f} {max(s['gc_runs_ms']):>6.1f} "
        f"{s['fds_total']:>6.0f} {fds['netlink']:>4.0f} {fds['raw']:>4.0f} {fds['receive']:>5.0f} "
        f"{fds['transmit']:>5.0f} {s['tasks']:>5.0f} {s['rss_mib']:>8.1f} {s['close_ms']:>9.1f} "
        f"{ok:>11} {s['send_all']:>5}/{s['want']:<5}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--large", action="store_true", help="also N = 256 and 1,024 links")
    parser.add_argument("--only-large", action="store_true", help="only N = 256 and 1,024")
    parser.add_argument("--only-storm", action="store_true", help="only the address storm")
    parser.add_argument("--compare-with", metavar="TREE", type=Path, action="append", default=[])
    parser.add_argument("--json", type=Path, help="write every result here too")
    parser.add_argument(
        "--source-port",
        choices=("ephemeral", "group"),
        default="ephemeral",
        help="the endpoints' source_port: 'group' sockets read no replies, so they are shared",
    )
    parser.add_argument(
        "--gc",
        choices=("on", "off"),
        default="on",
        help="'off' disables the garbage collector while the starts run and settle "
        "(a measurement of what the collections add to the stall, not a setting)",
    )
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("scale.py needs root (it builds network namespaces)", file=sys.stderr)
        return 2
    trees = [("this", ROOT)] + [
        (f"cmp{i + 1}" if len(args.compare_with) > 1 else "before", t.resolve())
        for i, t in enumerate(args.compare_with)
    ]
    for _, tree in trees:
        if not (tree / "mcastio" / "__init__.py").exists():
            print(f"{tree} has no mcastio package", file=sys.stderr)
            return 2
    cases: list[tuple[int, list[int]]] = []
    if not (args.only_large or args.only_storm):
        cases.append((8, [1, 10, 100]))
    if (args.large or args.only_large) and not args.only_storm:
        cases += [(256, [4]), (1024, [4])]
    print("trees: " + ", ".join(f"{label} = {tree}" for label, tree in trees))
    print(f"source_port = {args.source_port!r}, gc = {args.gc!r}")
    print(HEADER)
    results: list[dict[str, Any]] = []
    failed = False
    for links, group_counts in cases:
        with ScaleLab(links) as lab:
            for g in group_counts:
                for mode in ("one", "many"):
                    if g == 1 and mode == "many":
                        continue
                    per_tree: dict[str, list[dict[str, Any]]] = {label: [] for label, _ in trees}
                    for _ in range(args.rounds):
                        # Interleaved, so drift on a shared machine hits every tree alike.
                        for label, tree in trees:
                            per_tree[label].append(
                                run_child(lab, tree, g, mode, args.source_port, args.gc)
                            )
                    for label, _ in trees:
                        s = summarize(per_tree[label])
                        print(row(label, links, g, mode, s), flush=True)
                        if s["delivered"] != s["want"] or s["bad"] or s["send_all"] != s["want"]:
                            failed = True
                        results.append(
                            {"tree": label, "links": links, "groups": g, "mode": mode, **s}
                        )
                    if len(trees) > 1:
                        base = next(r for r in results[-len(trees) :] if r["tree"] == trees[1][0])
                        this = results[-len(trees)]
                        start = this["start_ms"] / base["start_ms"]
                        fds = this["fds_total"] / max(base["fds_total"], 1)
                        print(f"{'':8} this/before: start {start:.2f}, descriptors {fds:.2f}")
    for r in results:
        if r["monitor"] and r["tree"] == "this":
            print(f"host monitor (first case): {r['monitor']}")
            break
    if not args.only_large:
        print(f"\nstorm: {STORM} addresses added to eth0 under 100 endpoints (N = 8), medians")
        print(f"{'tree':<8} {'ip -batch s':>12} {'converged s':>12} {'re-plans/endpoint':>18}")
        with ScaleLab(8) as lab:
            storms: dict[str, list[dict[str, Any]]] = {label: [] for label, _ in trees}
            for _ in range(args.rounds):
                for label, tree in trees:
                    storms[label].append(run_child(lab, tree, 100, "storm"))
        for label, _ in trees:
            runs = storms[label]
            failed = failed or not all(r["ok"] for r in runs)
            added, converged = _median(runs, "added_s"), _median(runs, "converged_s")
            replans = _median(runs, "rounds")
            print(f"{label:<8} {added:>12.2f} {converged:>12.2f} {replans:>18.1f}")
            results.append({"tree": label, "storm": runs})
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    if failed:
        print("CORRECTNESS FAILED: some datagram was lost, duplicated or misattributed")
        return 1
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
    else:
        sys.exit(main())
