"""``mcastio demo``: naive sockets versus mcastio on a simulated multi-homed host.

The demo only ever sends inside network namespaces it builds. Where it cannot
build them it says why and how to get them, and exits without sending anything.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import struct
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

from .._endpoint import MulticastEndpoint
from .._model import Datagram
from ..testing import Lab, LabError
from ..testing._support import find_tool, lab_support
from . import contract
from .fmt import WIDTH

__all__ = ["register", "run_demo"]

GROUP = "239.255.77.77"
#: A second group on the same port, joined by another program on the host: what
#: IP_MULTICAST_ALL lets into a socket bound to the port.
OTHER = "239.255.77.78"
PORT = 45077
_REEXEC_FLAG = "MCASTIO_DEMO_UNSHARED"
DOCS = "docs/index.md#background and docs/explanation/design.md"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = sub.add_parser(
        "demo",
        help="show what naive sockets and mcastio do on a simulated multi-homed host",
        description="Build a private namespace lab (root or 'unshare -rnm' needed) and "
        "compare naive multicast sockets with mcastio on it. Nothing is sent outside "
        "the lab: without namespace rights the demo explains why and exits.",
    )
    demo.add_argument("--links", type=int, default=3, help="links on the simulated host (2-8)")
    demo.set_defaults(handler=lambda args: run_demo(links=args.links))


def run_demo(links: int = 3) -> int:
    if not 2 <= links <= 8:
        return contract.usage("--links must be between 2 and 8")
    reason = lab_support()
    if reason is not None:
        unshare_reason = _unshare_reason()
        if unshare_reason is None:
            # Unprivileged, but the kernel allows user namespaces: rerun inside one.
            env = dict(os.environ, **{_REEXEC_FLAG: "1"})
            unshare = find_tool("unshare") or "unshare"
            argv = [unshare, "-rnm", sys.executable, "-m", "mcastio", "demo", "--links", str(links)]
            return subprocess.call(argv, env=env)
        return _cannot_build(reason, unshare_reason)
    try:
        with Lab(links=links, ipv6=False) as lab:
            return _lab_demo(lab)
    except LabError as exc:
        return _cannot_build(str(exc), None)


def _unshare_reason() -> str | None:
    """``None`` when 'unshare -rnm' works here, else why not."""
    if os.environ.get(_REEXEC_FLAG):
        return "already inside 'unshare -rnm', and the lab still cannot be built"
    if os.geteuid() == 0:
        return "running as root already"
    unshare = find_tool("unshare")
    if unshare is None:
        return "'unshare' (util-linux) is not installed"
    probe = subprocess.run([unshare, "-rnm", "true"], capture_output=True, text=True, check=False)
    if probe.returncode == 0:
        return None
    why = probe.stderr.strip() or f"exit status {probe.returncode}"
    return f"'unshare -rnm' failed: {why}"


def _cannot_build(reason: str, unshare_reason: str | None) -> int:
    """Say why there is no lab and how to get one; send nothing anywhere."""
    lines = ["mcastio: demo: cannot build the namespace lab here:", *_wrap(reason, "  ")]
    if unshare_reason is not None:
        lines += _wrap(unshare_reason, "  ")
    lines += [
        "",
        *_wrap(
            "The demo sends multicast only inside namespaces it builds, never on your "
            "real network, so it stops here without sending anything. To run it:",
            "",
        ),
        "  - as root:  sudo mcastio demo",
        "  - or as a user, where the kernel allows unprivileged user namespaces",
        "    (sysctl kernel.unprivileged_userns_clone=1 on Debian/Ubuntu,",
        "    user.max_user_namespaces > 0): mcastio demo",
        "",
        *_wrap(f"What it shows, and why multicast fails on multi-homed hosts: {DOCS}.", ""),
    ]
    # A message, not the demo's output: on stderr, under the one prefix.
    print("\n".join(lines), file=sys.stderr)
    return contract.FAILED


def _wrap(text: str, indent: str) -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=indent, subsequent_indent=indent + "  ")


# -- peers: plain sockets opened inside each peer namespace -------------------------------


@contextlib.contextmanager
def _receivers(
    lab: Lab, where: list[tuple[str | None, str]], group: str
) -> Iterator[list[socket.socket]]:
    """One socket per (namespace, interface), joined to ``group`` there by index."""
    socks: list[socket.socket] = []
    try:
        for ns, ifname in where:
            with lab.inside(ns):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((group, PORT))
                index = socket.if_nametoindex(ifname)
                mreqn = struct.pack("=4s4si", socket.inet_aton(group), bytes(4), index)
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
                sock.setblocking(False)
        yield socks
    finally:
        for sock in socks:
            sock.close()


def _drain(sock: socket.socket) -> list[bytes]:
    got = []
    while True:
        try:
            got.append(sock.recv(2048))
        except BlockingIOError:
            return got


def _peers_send(lab: Lab, tag: str, group: str = GROUP, links: int | None = None) -> None:
    for link in lab.link[:links]:
        with lab.inside(link.peer_ns), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
            sock.sendto(f"{tag}:{link.host_if}".encode(), (group, PORT))


def _peer_receivers(lab: Lab) -> contextlib.AbstractContextManager[list[socket.socket]]:
    return _receivers(lab, [(link.peer_ns, link.peer_if) for link in lab.link], GROUP)


def _other_group_member(lab: Lab) -> contextlib.AbstractContextManager[list[socket.socket]]:
    """Another program on the host, joined to OTHER on eth0 (the same port)."""
    return _receivers(lab, [(None, lab.link[0].host_if)], OTHER)


# -- the experiments ------------------------------------------------------------------------


def _naive_receive(lab: Lab) -> tuple[set[str], int]:
    """Interfaces the naive socket hears, and datagrams of OTHER that leak in."""
    with lab.inside(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("0.0.0.0", PORT))
        mreq = socket.inet_aton(GROUP) + socket.inet_aton("0.0.0.0")
        # INADDR_ANY: the kernel picks one interface for us (the article's trap).
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
        sock.setblocking(False)
        with _other_group_member(lab) as others:
            time.sleep(0.05)
            _peers_send(lab, "naive")
            _peers_send(lab, "other", OTHER, links=1)
            time.sleep(0.2)
            for other in others:
                _drain(other)
        got = [data.decode() for data in _drain(sock)]
    heard = {d.split(":", 1)[1] for d in got if d.startswith("naive:")}
    return heard, sum(d.startswith("other:") for d in got)


def _naive_send(lab: Lab) -> set[str]:
    with _peer_receivers(lab) as peers:
        with lab.inside(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"naive", (GROUP, PORT))
        time.sleep(0.2)
        return {link.host_if for link, peer in zip(lab.link, peers, strict=True) if _drain(peer)}


async def _mcastio_both(lab: Lab) -> tuple[list[Datagram], set[str], int]:
    async with MulticastEndpoint(GROUP, PORT) as ep:
        sub = ep.subscribe()
        with _other_group_member(lab):
            await asyncio.to_thread(_peers_send, lab, "mcastio")
            await asyncio.to_thread(_peers_send, lab, "other", OTHER, 1)
            received: list[Datagram] = []
            with contextlib.suppress(asyncio.TimeoutError):
                while True:
                    received.append(await asyncio.wait_for(sub.__anext__(), 0.3))
        with _peer_receivers(lab) as peers:
            await ep.send_all(b"mcastio")
            await asyncio.sleep(0.2)
            reached = {
                link.host_if
                for link, peer in zip(lab.link, peers, strict=True)
                if len(_drain(peer)) == 1
            }
    leaked = sum(d.data.startswith(b"other:") for d in received)
    return [d for d in received if d.data.startswith(b"mcastio:")], reached, leaked


_INTRO = """\
A simulated host with {n} links (eth0 carries the default route) and
a peer namespace behind each link; group {group}:{port}.

  naive socket  bound to 0.0.0.0:{port}, joined with INADDR_ANY (the kernel
                picks one interface), sending with a plain sendto() (out of
                the default route's interface only)
  mcastio       MulticastEndpoint: joined by index on every interface, one
                transmit socket per interface, IP_MULTICAST_ALL off
"""


def _lab_demo(lab: Lab) -> int:
    names = [link.host_if for link in lab.link]
    print(_INTRO.format(n=len(names), group=GROUP, port=PORT))
    naive_rx, naive_leaks = _naive_receive(lab)
    naive_tx = _naive_send(lab)
    with lab.inside():
        received, mc_tx, mc_leaks = asyncio.run(_mcastio_both(lab))
    mc_rx = {d.interface: d for d in received}

    def cell(ok: bool) -> str:
        return "yes" if ok else "LOST"

    print(f"{'PATH':<28}{'NAIVE SOCKET':<14}{'MCASTIO':<9}MCASTIO HEARD FROM")
    for name in names:
        src = mc_rx[name].source[0] if name in mc_rx else ""
        row = f"{'receive on ' + name:<28}{cell(name in naive_rx):<14}{cell(name in mc_rx):<9}"
        print((row + src).rstrip())
    for name in names:
        print(f"{'send reaches ' + name:<28}{cell(name in naive_tx):<14}{cell(name in mc_tx)}")
    leak = f"other group {OTHER}"
    print(
        f"{leak:<28}{'LEAKS IN' if naive_leaks else 'kept out':<14}"
        f"{'LEAKS IN' if mc_leaks else 'kept out'}"
    )
    print()
    paths = len(names) * 2
    naive_lost = paths - len(naive_rx) - len(naive_tx)
    mc_lost = paths - len(mc_rx) - len(mc_tx)
    print(
        f"naive sockets lost {naive_lost} of {paths} paths and let in {naive_leaks} "
        f"datagram{'s' if naive_leaks != 1 else ''} for another group;\n"
        f"mcastio lost {mc_lost} and let in {mc_leaks}."
    )
    print(
        f"(The other group is joined by another program on eth0; IP_MULTICAST_ALL\n"
        f"delivers it to every socket bound to port {PORT}.)"
    )
    print(f"Why: {DOCS}.")
    ok = set(mc_rx) == set(names) and mc_tx == set(names) and mc_leaks == 0
    return 0 if ok else 1
