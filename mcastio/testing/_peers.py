"""The lab's links and its real peers (socat, tcpdump) in the peer namespaces.

A mixin of :class:`mcastio.testing.Lab`, kept apart so neither file grows past
what one can read at once.
"""

from __future__ import annotations

import ipaddress
import os
import select
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ._support import LabError, tcpdump_argv, tcpdump_support, tool

__all__ = ["LabPeers", "Link", "PeerListener"]


@dataclass(frozen=True, slots=True)
class Link:
    """One link between the host and a peer namespace."""

    index: int
    #: Interface name on the host side, e.g. ``"eth1"``.
    host_if: str
    #: Interface name on the peer side.
    peer_if: str
    #: Network namespace of the peer.
    peer_ns: str
    host_addr: str
    peer_addr: str
    prefixlen: int = 24
    host_addr6: str | None = None
    peer_addr6: str | None = None


class _Runner(Protocol):
    """What the peer helpers need from the lab."""

    host: str

    def run(
        self, ns: str, *argv: str, check: bool = True, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]: ...

    def popen(self, ns: str, *argv: str, **kwargs: object) -> subprocess.Popen[bytes]: ...

    def wait_for_membership(
        self,
        ns: str,
        ifname: str,
        group: str,
        proc: subprocess.Popen[bytes] | None = None,
        timeout: float = 5.0,
    ) -> None: ...


class LabPeers:
    # -- real peers (socat) ----------------------------------------------------------

    def peer_send(
        self: _Runner,
        link: Link,
        group: str,
        port: int,
        payload: bytes,
        *,
        source: str | None = None,
    ) -> None:
        """Send one datagram to ``group`` from ``link``'s peer, with socat.

        ``source`` picks the sender's address (it must be assigned in the peer); by
        default the kernel chooses, which for a link-scope IPv6 group is the peer's
        link-local address.
        """
        v6 = ":" in group
        if v6:
            # The peer has no IPv6 default route: bind to the device so the
            # ff00::/8 route of that device is used.
            target = f"UDP6-DATAGRAM:[{group}]:{port},so-bindtodevice={link.peer_if}"
            if source is not None:
                target += f",bind=[{source}]"
        else:
            target = f"UDP4-DATAGRAM:{group}:{port},ip-multicast-if={source or link.peer_addr}"
            if source is not None:
                target += f",bind={source}"
        proc = subprocess.run(
            [tool("ip"), "netns", "exec", link.peer_ns, tool("socat"), "-u", "STDIN", target],
            input=payload,
            capture_output=True,
            check=False,
            timeout=10,
        )
        if proc.returncode != 0:
            raise LabError(f"socat send on {link.peer_ns}: {proc.stderr.decode().strip()}")

    def peer_listen(self: _Runner, link: Link, group: str, port: int) -> PeerListener:
        """Join ``group`` on ``link``'s peer with socat and collect what arrives."""
        if ":" in group:
            # ipv6only: otherwise the socket also takes IPv4 datagrams as mapped addresses.
            spec = f"UDP6-RECV:{port},ipv6-join-group=[{group}]:{link.peer_if},reuseaddr,ipv6only=1"
        else:
            spec = f"UDP4-RECV:{port},ip-add-membership={group}:{link.peer_if},reuseaddr"
        proc = self.popen(
            link.peer_ns,
            "socat",
            "-u",
            spec,
            "STDOUT",
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        listener = PeerListener(proc)
        self.wait_for_membership(link.peer_ns, link.peer_if, group, proc)
        # socat joins before it binds: a membership alone does not mean it hears the port.
        _wait_bound(proc, port)
        return listener

    def tcpdump(
        self: _Runner,
        ns: str,
        ifname: str,
        bpf: str,
        *,
        count: int | None = None,
        verbose: bool = False,
    ) -> subprocess.Popen[bytes]:
        """Start tcpdump on ``ifname`` in ``ns``; returns once the capture is armed.

        Lines come on stdout as tcpdump prints them (``-n -l``; ``verbose`` adds
        ``-vv``, which shows IGMPv3 and MLDv2 group records); the process is killed
        by :meth:`destroy` if still running.
        """
        reason = tcpdump_support()
        if reason is not None:
            raise LabError(reason)
        argv = [*tcpdump_argv(), "-n", "-l", "-i", ifname]
        if verbose:
            argv.append("-vv")
        if count is not None:
            argv += ["-c", str(count)]
        proc = self.popen(ns, *argv, bpf, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stderr is not None
        seen = ""
        # tcpdump announces "listening on" on stderr once the capture is armed.
        while line := proc.stderr.readline().decode():
            if "listening on" in line:
                return proc
            seen += line
        proc.kill()
        raise LabError(f"tcpdump on {ifname} in {ns} did not start: {seen.strip()}")

    def wait_for_membership(
        self: _Runner,
        ns: str,
        ifname: str,
        group: str,
        proc: subprocess.Popen[bytes] | None = None,
        timeout: float = 5.0,
    ) -> None:
        """Block until ``ifname`` in ``ns`` has joined ``group`` (per ``ip maddr``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.run(ns, "ip", "maddr", "show", "dev", ifname, check=False).stdout
            # Whole-token match: " ff02::1" is also a prefix of " ff02::1:ff00:2".
            if any(_same_address(tok, group) for tok in out.split()):
                return
            if proc is not None and proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise LabError(f"peer listener exited {proc.returncode}: {err.strip()}")
            time.sleep(0.02)
        raise LabError(f"{ifname} in {ns} did not join {group} within {timeout}s")


class PeerListener:
    """A socat receiver in a peer; :meth:`stop` returns every byte it got."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self._proc = proc
        self._buffer = b""

    def wait_for(self, line: bytes, timeout: float = 5.0) -> None:
        """Block until a datagram ending in ``line`` plus newline has arrived.

        Send a marker after the datagrams under test and wait for it: a link
        delivers in order, so anything sent before the marker is in by then.
        """
        self._wait(lambda: line in self._buffer.splitlines(), repr(line), timeout)

    def wait_for_any(self, timeout: float = 5.0) -> None:
        """Block until anything at all has arrived (a sender has begun)."""
        self._wait(lambda: bool(self._buffer), "anything", timeout)

    def _wait(self, done: Callable[[], bool], what: str, timeout: float) -> None:
        assert self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while not done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LabError(f"peer listener did not receive {what} within {timeout}s")
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise LabError(f"peer listener exited before receiving {what}")
                self._buffer += chunk

    def stop(self) -> bytes:
        _settle(self._proc)
        self._proc.kill()
        self._proc.wait(timeout=5)
        assert self._proc.stdout is not None
        data = self._buffer + self._proc.stdout.read()
        self._buffer = b""
        self._proc.stdout.close()
        if self._proc.stderr is not None:
            self._proc.stderr.close()
        return data

    def lines(self) -> list[bytes]:
        """Stop and split the received bytes on newlines (one datagram per line)."""
        return self.stop().splitlines()


def _udp_sockets(pid: int) -> list[tuple[int, int]]:
    """(local port, bytes queued unread) of each UDP socket ``pid`` holds, in its namespace."""
    fd_dir = f"/proc/{pid}/fd"
    # Its own sockets, by inode: another program's on the port says nothing.
    inodes = {os.readlink(f"{fd_dir}/{fd}") for fd in os.listdir(fd_dir)}
    found = []
    for table in ("udp", "udp6"):
        with open(f"/proc/{pid}/net/{table}", encoding="ascii") as f:
            for row in f.read().splitlines()[1:]:
                cols = row.split()
                if f"socket:[{cols[9]}]" in inodes:
                    port, queued = cols[1].rpartition(":")[2], cols[4].partition(":")[2]
                    found.append((int(port, 16), int(queued, 16)))
    return found


def _wait_bound(proc: subprocess.Popen[bytes], port: int, timeout: float = 5.0) -> None:
    """Block until ``proc`` holds a UDP socket bound to ``port``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if any(local == port for local, _ in _udp_sockets(proc.pid)):
                return
        except OSError:
            pass  # between exec and bind, or exited: looked at below
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise LabError(f"peer listener exited {proc.returncode}: {err.strip()}")
        if time.monotonic() > deadline:
            raise LabError(f"peer listener did not bind port {port} within {timeout}s")
        time.sleep(0.01)


def _settle(proc: subprocess.Popen[bytes], timeout: float = 2.0) -> None:
    """Wait (at most ``timeout``) until ``proc`` has read what its sockets hold and sleeps.

    Killed at once, a socat that a busy machine has not run since the datagrams
    arrived would lose them; asleep with nothing queued, it has written them out.
    """
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            with open(f"/proc/{proc.pid}/stat", encoding="ascii") as f:
                state = f.read().rpartition(")")[2].split()[0]
            if state == "S" and not any(queued for _, queued in _udp_sockets(proc.pid)):
                return
        except OSError:
            return  # gone meanwhile: nothing more to read from it
        time.sleep(0.005)


def _same_address(token: str, address: str) -> bool:
    try:
        return ipaddress.ip_address(token) == ipaddress.ip_address(address)
    except ValueError:
        return False
