"""``mcastio demo``: naive sockets versus mcastio on a simulated multi-homed host."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator

from .._endpoint import MulticastEndpoint
from .._errors import MulticastError
from .._model import Datagram
from ..testing import Lab, LabError, lab_support

__all__ = ["run_demo"]

GROUP = "239.255.77.77"
PORT = 45077
_REEXEC_FLAG = "MCASTIO_DEMO_UNSHARED"


def run_demo(links: int = 3) -> int:
    if not 2 <= links <= 8:
        print("mcastio demo: --links must be between 2 and 8", file=sys.stderr)
        return 2
    reason = lab_support()
    if reason is not None and _can_unshare():
        # Unprivileged, but the kernel allows user namespaces: rerun inside one.
        env = dict(os.environ, **{_REEXEC_FLAG: "1"})
        argv = ["unshare", "-rnm", sys.executable, "-m", "mcastio", "demo", "--links", str(links)]
        return subprocess.call(argv, env=env)
    if reason is not None:
        print(f"mcastio demo: cannot build a namespace lab here: {reason}.")
        print("Falling back to a loopback send and receive on this host.\n")
        return _loopback_demo()
    try:
        with Lab(links=links, ipv6=False) as lab:
            return _lab_demo(lab)
    except LabError as exc:
        print(f"mcastio demo: the namespace lab failed: {exc}", file=sys.stderr)
        return 1


def _can_unshare() -> bool:
    if os.environ.get(_REEXEC_FLAG) or os.geteuid() == 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rnm", "true"], capture_output=True, check=False)
    return probe.returncode == 0


# -- peers: plain sockets opened inside each peer namespace -------------------------------


@contextlib.contextmanager
def _peer_receivers(lab: Lab) -> Iterator[list[socket.socket]]:
    socks: list[socket.socket] = []
    try:
        for link in lab.link:
            with lab.inside(link.peer_ns):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(("0.0.0.0", PORT))
                index = socket.if_nametoindex(link.peer_if)
                mreqn = struct.pack("=4s4si", socket.inet_aton(GROUP), bytes(4), index)
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


def _peers_send(lab: Lab, tag: str) -> None:
    for link in lab.link:
        with lab.inside(link.peer_ns), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
            sock.sendto(f"{tag}:{link.host_if}".encode(), (GROUP, PORT))


# -- the four experiments -----------------------------------------------------------------


def _naive_receive(lab: Lab) -> set[str]:
    with lab.inside(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("0.0.0.0", PORT))
        mreq = socket.inet_aton(GROUP) + socket.inet_aton("0.0.0.0")
        # INADDR_ANY: the kernel picks one interface for us (the article's trap).
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
        sock.setblocking(False)
        time.sleep(0.05)
        _peers_send(lab, "naive")
        time.sleep(0.2)
        return {data.decode().split(":", 1)[1] for data in _drain(sock)}


def _naive_send(lab: Lab) -> set[str]:
    with _peer_receivers(lab) as peers:
        with lab.inside(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"naive", (GROUP, PORT))
        time.sleep(0.2)
        return {link.host_if for link, peer in zip(lab.link, peers, strict=True) if _drain(peer)}


async def _mcastio_both(lab: Lab) -> tuple[list[Datagram], set[str]]:
    async with MulticastEndpoint(GROUP, PORT) as ep:
        sub = ep.subscribe()
        await asyncio.to_thread(_peers_send, lab, "mcastio")
        received: list[Datagram] = []
        with contextlib.suppress(asyncio.TimeoutError):
            while len(received) < len(lab.link):
                received.append(await asyncio.wait_for(sub.__anext__(), 1.0))
        with _peer_receivers(lab) as peers:
            await ep.send_all(b"mcastio")
            await asyncio.sleep(0.2)
            reached = {
                link.host_if
                for link, peer in zip(lab.link, peers, strict=True)
                if len(_drain(peer)) == 1
            }
    return received, reached


def _lab_demo(lab: Lab) -> int:
    names = [link.host_if for link in lab.link]
    print(f"mcastio demo: a simulated host with {len(names)} links, default route on eth0")
    print(f"group {GROUP}:{PORT}; a peer namespace sits behind each link\n")
    naive_rx = _naive_receive(lab)
    naive_tx = _naive_send(lab)
    with lab.inside():
        received, mc_tx = asyncio.run(_mcastio_both(lab))
    mc_rx = {d.interface: d for d in received}

    def cell(ok: bool, extra: str = "") -> str:
        return ("yes" + (f" {extra}" if extra else "")) if ok else "LOST"

    print(f"{'':24}{'naive socket':<18}mcastio")
    for name in names:
        src = mc_rx[name].source[0] if name in mc_rx else ""
        print(f"{'receive on ' + name:<24}{cell(name in naive_rx):<18}{cell(name in mc_rx, src)}")
    for name in names:
        print(f"{'send reaches ' + name:<24}{cell(name in naive_tx):<18}{cell(name in mc_tx)}")
    print()
    lost = len(names) * 2 - len(naive_rx) - len(naive_tx)
    print(
        f"naive sockets lost {lost} of {len(names) * 2} paths; mcastio lost "
        f"{len(names) * 2 - len(mc_rx) - len(mc_tx)}."
    )
    ok = set(mc_rx) == set(names) and mc_tx == set(names)
    return 0 if ok else 1


def _loopback_demo() -> int:
    async def main() -> int:
        try:
            ep = MulticastEndpoint(GROUP, PORT, loopback=True)
            await ep.start()
        except MulticastError as exc:
            print(f"no interface can carry multicast here:\n{exc}")
            return 1
        async with ep:
            sub = ep.subscribe()
            results = await ep.send_all(b"hello from mcastio")
            for r in results:
                state = "sent" if r.ok else f"failed: {r.error}"
                print(f"send on {r.interface:<12} {state}")
            got: list[Datagram] = []
            with contextlib.suppress(asyncio.TimeoutError):
                while len(got) < sum(r.ok for r in results):
                    got.append(await asyncio.wait_for(sub.__anext__(), 1.0))
            for d in got:
                print(f"received on {d.interface:<8} from {d.source[0]}: {d.data!r}")
            return 0 if got else 1

    return asyncio.run(main())
