"""A simulated multi-homed host for testing multicast programs.

``Lab`` builds, from Linux network namespaces and veth pairs, a *host* namespace
with several links and a *peer* namespace behind each link, with the default
route on link 0. Code that runs inside ``lab.inside()`` sees the host's
interfaces; tools run in the peers with ``lab.run(peer, ...)``::

    with Lab(links=3) as lab, lab.inside():
        asyncio.run(my_program())

It needs root, or an unprivileged user namespace (``unshare -rnm``); see
:func:`lab_support`. Every namespace has a unique name and is removed on exit,
also when the code inside fails.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType

__all__ = ["Lab", "LabError", "Link", "PeerListener", "lab_support"]

_CLONE_NEWNET = 0x40000000
_PREFIX = "mcio"


class LabError(RuntimeError):
    """The lab could not be built or a command in it failed."""


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


def _in_user_namespace() -> bool:
    try:
        with open("/proc/self/uid_map", encoding="ascii") as f:
            first = f.read().split()
    except OSError:
        return False
    # The initial namespace maps the whole 32-bit range onto itself.
    return first[:3] != ["0", "0", "4294967295"]


def lab_support() -> str | None:
    """``None`` when labs can be built here, else the reason they cannot."""
    if shutil.which("ip") is None:
        return "the 'ip' command (iproute2) is not installed"
    if os.geteuid() != 0:
        return (
            "building network namespaces needs root or a user namespace; "
            "run under 'unshare -rnm' (scripts/test does this by itself)"
        )
    probe = subprocess.run(
        ["unshare", "--net", "true"], capture_output=True, text=True, check=False
    )
    if probe.returncode != 0:
        return f"cannot create a network namespace: {probe.stderr.strip() or probe.returncode}"
    return None


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _setns(fd: int) -> None:
    if _libc().setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@dataclass
class Lab:
    """A host namespace with ``links`` veth links, each to its own peer namespace."""

    links: int = 3
    ipv6: bool = True
    #: Extra sysctls for the host namespace, e.g. ``{"net.ipv4.igmp_max_memberships": "2"}``.
    sysctls: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.links < 1:
            raise ValueError("a lab needs at least one link")
        self.tag = f"{_PREFIX}-{os.getpid()}-{secrets.token_hex(3)}"
        self.host = f"{self.tag}-h"
        self.link: list[Link] = []
        self._namespaces: list[str] = []
        self._procs: list[subprocess.Popen[bytes]] = []
        self._built = False

    # -- building ----------------------------------------------------------------------

    def __enter__(self) -> Lab:
        self.build()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.destroy()

    def build(self) -> None:
        reason = lab_support()
        if reason is not None:
            raise LabError(reason)
        _prepare_netns_dir()
        _remove_stale()
        try:
            self._add_ns(self.host)
            self.sh(self.host, "ip link set lo up")
            for key, value in self.sysctls.items():
                self.sh(self.host, f"sysctl -qw {key}={value}")
            for _ in range(self.links):
                self.add_link()
            self.sh(self.host, f"ip route add default via {self.link[0].peer_addr}")
        except BaseException:
            self.destroy()
            raise
        self._built = True

    def _add_ns(self, name: str) -> None:
        _ip("netns", "add", name)
        self._namespaces.append(name)

    def add_link(self, *, peer_ns: str | None = None, up: bool = True) -> Link:
        """Add one more link (``eth<N>``) to the host, with a new peer namespace."""
        n = len(self.link)
        peer = peer_ns or f"{self.tag}-p{n}"
        if peer not in self._namespaces:
            self._add_ns(peer)
            self.sh(peer, "ip link set lo up")
        host_if, peer_if = f"eth{n}", f"veth{n}"
        sub = 200 + n // 250
        host_addr, peer_addr = f"10.{sub}.{n % 250}.1", f"10.{sub}.{n % 250}.2"
        link = Link(
            index=n,
            host_if=host_if,
            peer_if=peer_if,
            peer_ns=peer,
            host_addr=host_addr,
            peer_addr=peer_addr,
            host_addr6=f"fd00:{n:x}::1" if self.ipv6 else None,
            peer_addr6=f"fd00:{n:x}::2" if self.ipv6 else None,
        )
        self.sh(self.host, f"ip link add {host_if} type veth peer name {peer_if} netns {peer}")
        for ns, ifname, addr, addr6 in (
            (self.host, host_if, host_addr, link.host_addr6),
            (peer, peer_if, peer_addr, link.peer_addr6),
        ):
            if addr6:
                # Skip duplicate address detection so the address is usable at once.
                self.sh(ns, f"sysctl -qw net.ipv6.conf.{ifname}.accept_dad=0")
            self.sh(ns, f"ip addr add {addr}/24 dev {ifname}")
            if addr6:
                self.sh(ns, f"ip -6 addr add {addr6}/64 dev {ifname} nodad")
            if up:
                self.sh(ns, f"ip link set {ifname} up")
        if peer_ns is None:
            # The peer's own default route, so replies and tools have somewhere to go.
            self.sh(peer, f"ip route add default via {host_addr}")
            # Peers send multicast out of their single link without further setup.
        self.link.append(link)
        return link

    def destroy(self) -> None:
        """Stop every process started here and delete every namespace. Idempotent."""
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
            for stream in (proc.stdout, proc.stderr, proc.stdin):
                if stream is not None:
                    stream.close()
        self._procs.clear()
        for name in reversed(self._namespaces):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
        self._namespaces.clear()
        self._built = False

    # -- running things ---------------------------------------------------------------

    def sh(self, ns: str, command: str, *, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a shell-free command (split on spaces) in namespace ``ns``."""
        return self.run(ns, *command.split(), check=check)

    def run(
        self, ns: str, *argv: str, check: bool = True, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["ip", "netns", "exec", ns, *argv],
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise LabError(
                f"in {ns}: {' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}"
            )
        return proc

    def popen(self, ns: str, *argv: str, **kwargs: object) -> subprocess.Popen[bytes]:
        """Start a background process in ``ns``; it is killed by :meth:`destroy`."""
        proc: subprocess.Popen[bytes] = subprocess.Popen(  # type: ignore[call-overload]
            ["ip", "netns", "exec", ns, *argv], **kwargs
        )
        self._procs.append(proc)
        return proc

    # -- real peers (socat) ----------------------------------------------------------

    def peer_send(self, link: Link, group: str, port: int, payload: bytes) -> None:
        """Send one datagram to ``group`` from ``link``'s peer, with socat."""
        family = "UDP6" if ":" in group else "UDP4"
        dest = f"[{group}]" if ":" in group else group
        opts = f"ip-multicast-if={link.peer_addr}" if family == "UDP4" else ""
        target = f"{family}-DATAGRAM:{dest}:{port}" + (f",{opts}" if opts else "")
        if family == "UDP6":
            target += f",so-bindtodevice={link.peer_if}"
        proc = subprocess.run(
            ["ip", "netns", "exec", link.peer_ns, "socat", "-u", "STDIN", target],
            input=payload,
            capture_output=True,
            check=False,
            timeout=10,
        )
        if proc.returncode != 0:
            raise LabError(f"socat send on {link.peer_ns}: {proc.stderr.decode().strip()}")

    def peer_listen(self, link: Link, group: str, port: int) -> PeerListener:
        """Join ``group`` on ``link``'s peer with socat and collect what arrives."""
        if ":" in group:
            spec = f"UDP6-RECV:{port},ipv6-join-group=[{group}]:{link.peer_if},reuseaddr"
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
        return listener

    def wait_for_membership(
        self,
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
            if f" {group}" in out or f" {group}\n" in out:
                return
            if proc is not None and proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise LabError(f"peer listener exited {proc.returncode}: {err.strip()}")
            time.sleep(0.02)
        raise LabError(f"{ifname} in {ns} did not join {group} within {timeout}s")

    @contextlib.contextmanager
    def inside(self, ns: str | None = None) -> Iterator[None]:
        """Move the calling thread into ``ns`` (default: the host) for the block.

        Sockets opened inside stay in that namespace after the block ends.
        """
        target = os.open(f"/run/netns/{ns or self.host}", os.O_RDONLY | os.O_CLOEXEC)
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

    def peers(self) -> Sequence[Link]:
        return tuple(self.link)


class PeerListener:
    """A socat receiver in a peer; :meth:`stop` returns every byte it got."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self._proc = proc

    def stop(self) -> bytes:
        self._proc.kill()
        self._proc.wait(timeout=5)
        assert self._proc.stdout is not None
        data = self._proc.stdout.read()
        self._proc.stdout.close()
        if self._proc.stderr is not None:
            self._proc.stderr.close()
        return data

    def lines(self) -> list[bytes]:
        """Stop and split the received bytes on newlines (one datagram per line)."""
        return self.stop().splitlines()


def _ip(*argv: str) -> None:
    proc = subprocess.run(["ip", *argv], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise LabError(f"ip {' '.join(argv)}: {proc.stderr.strip()}")


def _prepare_netns_dir() -> None:
    if os.access("/run/netns", os.W_OK) or os.access("/run", os.W_OK):
        return
    if _in_user_namespace():
        # In 'unshare -rnm' /run belongs to the real root; a private tmpfs lets
        # 'ip netns add' create its mount points.
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "mcastio-netns", "/run"], capture_output=True, text=True
        )
        if proc.returncode == 0:
            return
        raise LabError(f"cannot mount a private /run for namespaces: {proc.stderr.strip()}")


def _remove_stale() -> None:
    """Delete namespaces left by lab processes that died without cleaning up."""
    try:
        names = os.listdir("/run/netns")
    except OSError:
        return
    for name in names:
        parts = name.split("-")
        ours = len(parts) >= 3 and parts[0] == _PREFIX and parts[1].isdigit()
        if ours and not os.path.exists(f"/proc/{parts[1]}"):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
