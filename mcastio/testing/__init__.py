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
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType

from ._peers import LabPeers, Link, PeerListener
from ._support import (
    LabError,
    find_tool,
    lab_support,
    prepare_netns_dir,
    read_capture,
    resolve,
    tcpdump_argv,
    tcpdump_support,
    tool,
)

__all__ = [
    "Lab",
    "LabError",
    "Link",
    "PeerListener",
    "find_tool",
    "lab_support",
    "read_capture",
    "tcpdump_argv",
    "tcpdump_support",
    "tool",
]

_CLONE_NEWNET = 0x40000000
_PREFIX = "mcio"


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _setns(fd: int) -> None:
    if _libc().setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@dataclass
class Lab(LabPeers):
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
        prepare_netns_dir()
        _remove_stale()
        try:
            self._add_ns(self.host)
            self.sh(self.host, "ip link set lo up")
            for key, value in self.sysctls.items():
                self.sh(self.host, f"sysctl -qw {key}={value}")
            for _ in range(self.links):
                self.add_link()
            self.sh(self.host, f"ip route add default via {self.link[0].peer_addr}")
            if self.ipv6:
                self.wait_ipv6_ready(self.link)
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
        if self._built and up and link.host_addr6:
            self.wait_ipv6_ready([link])
        return link

    def wait_ipv6_ready(self, links: Sequence[Link], timeout: float = 5.0) -> None:
        """Block until both ends of ``links`` have a usable (non-tentative) link-local address.

        Until then the kernel has no ff00::/8 route on the device, and sending to an
        IPv6 group fails with ENETUNREACH.
        """
        wanted: dict[str, set[str]] = {}
        for lk in links:
            wanted.setdefault(self.host, set()).add(lk.host_if)
            wanted.setdefault(lk.peer_ns, set()).add(lk.peer_if)
        deadline = time.monotonic() + timeout
        while True:
            pending = {ns: devs - self._ready_link_local(ns) for ns, devs in wanted.items()}
            wanted = {ns: devs for ns, devs in pending.items() if devs}
            if not wanted:
                return
            if time.monotonic() > deadline:
                raise LabError(f"no usable IPv6 link-local address on {wanted} within {timeout}s")
            # A veth whose peer has the same ifindex (eth0 and veth0 are both 2) gets its
            # carrier change queued as non-urgent, up to 1 s late; asking for the
            # link (RTM_GETLINK) makes the kernel process it now.
            for ns, devs in wanted.items():
                for dev in devs:
                    self.run(ns, "ip", "link", "show", "dev", dev, check=False)

    def _ready_link_local(self, ns: str) -> set[str]:
        """Devices in ``ns`` with a link-local address that is no longer tentative."""
        # Read in-process through setns: a subprocess per poll would cost ~15 ms each.
        with self.inside(ns), open("/proc/thread-self/net/if_inet6", encoding="ascii") as f:
            text = f.read()
        ready = set()
        for line in text.splitlines():
            parts = line.split()
            # Scope 0x20 is link-local; flag 0x40 is IFA_F_TENTATIVE.
            if len(parts) == 6 and parts[3] == "20" and not int(parts[4], 16) & 0x40:
                ready.add(parts[5])
        return ready

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
            subprocess.run([tool("ip"), "netns", "del", name], capture_output=True, check=False)
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
            [tool("ip"), "netns", "exec", ns, *resolve(argv)],
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
            [tool("ip"), "netns", "exec", ns, *resolve(argv)], **kwargs
        )
        self._procs.append(proc)
        return proc

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

    def remove_link(self, link: Link) -> None:
        """Delete ``link``'s veth pair at runtime, as an unplugged USB card vanishes."""
        self.sh(self.host, f"ip link del {link.host_if}")

    def recreate_link(self, link: Link) -> None:
        """Re-create a removed ``link`` under the same names and addresses.

        The host side gets a new interface index, as a re-plugged card does.
        """
        self.sh(
            self.host,
            f"ip link add {link.host_if} type veth peer name {link.peer_if} netns {link.peer_ns}",
        )
        for ns, ifname, addr in (
            (self.host, link.host_if, link.host_addr),
            (link.peer_ns, link.peer_if, link.peer_addr),
        ):
            self.sh(ns, f"ip addr add {addr}/{link.prefixlen} dev {ifname}")
            self.sh(ns, f"ip link set {ifname} up")


def _ip(*argv: str) -> None:
    proc = subprocess.run([tool("ip"), *argv], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise LabError(f"ip {' '.join(argv)}: {proc.stderr.strip()}")


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
            subprocess.run([tool("ip"), "netns", "del", name], capture_output=True, check=False)
