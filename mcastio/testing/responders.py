"""Real responders for a :class:`mcastio.testing.Lab`: avahi-daemon, python-zeroconf, minidlna.

Each runs in one namespace of the lab (a peer, or the host), answers the way it
would on a real network, and is stopped by ``with`` or by the lab's ``destroy``::

    with Lab(links=2) as lab, Avahi(lab, lab.link[0].peer_ns, [lab.link[0].peer_if], "peer0"):
        ...  # "peer0.local" now answers mDNS queries on link 0

They need the programs installed: ``avahi-daemon`` and ``minidlna`` from Debian
(``scripts/test`` installs them as root) and the ``zeroconf`` package (the ``test``
extra); ``Avahi(..., dbus=True)`` also ``dbus-daemon`` and avahi-utils. They run
as root and in an unprivileged user namespace (``unshare -rnm``) alike.
:func:`responder_support` says what is missing.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from types import TracebackType

from . import Lab, LabError
from ._support import _in_user_namespace, find_tool, resolve, tool

__all__ = ["Avahi", "MiniDlna", "ZeroconfResponder", "responder_support", "start_all"]

#: The service type the zeroconf responders register.
ZEROCONF_TYPE = "_mcastio._udp.local."

_AVAHI_CONF = """[server]
host-name={name}
use-ipv4=yes
use-ipv6=yes
allow-interfaces={interfaces}
enable-dbus={dbus}
ratelimit-interval-usec=0
ratelimit-burst=0
[wide-area]
enable-wide-area=no
[publish]
publish-hinfo=no
publish-workstation=no
[reflector]
enable-reflector=no
"""

# The avahi-daemon package makes /run/avahi-daemon only when installed as a service;
# a private tmpfs there keeps each daemon's pid file and socket apart. avahi-daemon
# insists that directory belongs to user "avahi": in a user namespace only root is
# mapped, so a private /etc/passwd there (a bind mount in this mount namespace) names
# uid 0 "avahi". With D-Bus, a private bus in the daemon's directory serves the
# clients (avahi-resolve, avahi-browse), which find it by DBUS_SYSTEM_BUS_ADDRESS.
_AVAHI_RUN = """set -e
if [ -f "$3/passwd" ]; then
    mount --bind "$3/passwd" /etc/passwd && mount --bind "$3/group" /etc/group
fi
mkdir -p /run/avahi-daemon && mount -t tmpfs mcastio-avahi /run/avahi-daemon
if [ -d "$3/services" ]; then
    mount --bind "$3/services" /etc/avahi/services
fi
if [ -f "$3/dbus.conf" ]; then
    dbus-daemon --config-file="$3/dbus.conf" --nofork --nopidfile &
    while [ ! -S "$3/bus" ]; do sleep 0.01; done
    export DBUS_SYSTEM_BUS_ADDRESS="unix:path=$3/bus"
fi
exec "$2" -f "$1" --no-chroot --no-drop-root --no-rlimits --no-proc-title
"""

_SERVICE_XML = """<?xml version="1.0" standalone='no'?>
<!DOCTYPE service-group SYSTEM "avahi-service.dtd">
<service-group>
  <name>{name}</name>
  <service><type>{type}</type><port>{port}</port></service>
</service-group>
"""

# A system bus for one daemon and its clients: no users to tell apart in a lab.
_DBUS_CONF = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={path}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_type="method_return"/>
    <allow send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="signal"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
  </policy>
</busconfig>
"""


_ZEROCONF_SCRIPT = """
import socket, sys
from zeroconf import IPVersion, ServiceInfo, Zeroconf
name, addresses = sys.argv[1], sys.argv[2:]
packed = [socket.inet_pton(socket.AF_INET6 if ":" in a else socket.AF_INET, a) for a in addresses]
zc = Zeroconf(ip_version=IPVersion.All)
info = ServiceInfo(
    "{type}", name + "." + "{type}", port=9, addresses=packed, server=name + ".local."
)
zc.register_service(info)
print("ready", flush=True)
sys.stdin.read()
zc.close()
""".replace("{type}", ZEROCONF_TYPE)


def responder_support() -> str | None:
    """``None`` when every responder here can run, else what is missing."""
    # Looked up in sbin too: a plain user's PATH often lacks it.
    missing = [tool for tool in ("avahi-daemon", "minidlnad") if find_tool(tool) is None]
    try:
        import zeroconf  # noqa: F401
    except ImportError:
        missing.append("the zeroconf package")
    if missing:
        return f"not installed: {', '.join(missing)} (scripts/test installs them)"
    return None


class _Daemon:
    """A process in one namespace of a lab, started by ``start`` and ended by ``stop``."""

    def __init__(self, lab: Lab, ns: str) -> None:
        self.lab = lab
        self.ns = ns
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="mcastio-peer-")
        self.log = b""

    def __enter__(self) -> _Daemon:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start the program and block until it answers."""
        self._launch()
        self._ready()

    def _launch(self) -> None:
        raise NotImplementedError

    def _ready(self) -> None:
        raise NotImplementedError

    def _spawn(
        self, *argv: str, stdin: bool = False, output: bool = True
    ) -> subprocess.Popen[bytes]:
        # Without ``output`` nothing reads the pipe, so a chatty daemon must not get one.
        self._proc = self.lab.popen(
            self.ns,
            *argv,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE if output else subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            # A session of its own: stop() ends the helpers it started too (dbus-daemon).
            start_new_session=True,
        )
        return self._proc

    def _wait_for_output(self, marker: bytes, timeout: float) -> None:
        """Block until the process prints a line containing ``marker``."""
        proc = self._proc
        assert proc is not None
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while marker not in self.log:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.stop()
                raise LabError(f"{type(self).__name__} not ready in {timeout}s: {self.log!r}")
            if select.select([fd], [], [], remaining)[0]:
                chunk = os.read(fd, 65536)
                if not chunk:
                    self.stop()
                    raise LabError(f"{type(self).__name__} exited: {self.log.decode()}")
                self.log += chunk

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    stream.close()
        self._dir.cleanup()


def start_all(daemons: Sequence[_Daemon]) -> None:
    """Start several at once (each takes about a second to probe its names)."""
    try:
        for daemon in daemons:
            daemon._launch()
        for daemon in daemons:
            daemon._ready()
    except BaseException:
        for daemon in daemons:
            daemon.stop()
        raise


class Avahi(_Daemon):
    """avahi-daemon answering for ``<name>.local`` on ``interfaces`` of ``ns``.

    /run/avahi-daemon is private to the daemon, so several can run on one machine,
    in peers and in the host, beside a system avahi. D-Bus is off unless ``dbus``:
    then the daemon gets a private system bus, and :meth:`resolve` and
    :meth:`browse` run Debian's avahi-utils clients against it. ``services`` are
    (instance name, type, port) triples it publishes, in place of the host's
    /etc/avahi/services.
    """

    def __init__(
        self,
        lab: Lab,
        ns: str,
        interfaces: Sequence[str],
        name: str,
        *,
        dbus: bool = False,
        services: Sequence[tuple[str, str, int]] = (),
    ) -> None:
        super().__init__(lab, ns)
        self.name = name
        self.interfaces = tuple(interfaces)
        self.dbus = dbus
        self.services = tuple(services)

    def _launch(self) -> None:
        base = self._dir.name
        conf = os.path.join(base, "avahi-daemon.conf")
        with open(conf, "w", encoding="ascii") as f:
            f.write(
                _AVAHI_CONF.format(
                    name=self.name,
                    interfaces=",".join(self.interfaces),
                    dbus="yes" if self.dbus else "no",
                )
            )
        if self.dbus:
            with open(os.path.join(base, "dbus.conf"), "w", encoding="ascii") as f:
                f.write(_DBUS_CONF.format(path=os.path.join(base, "bus")))
        if self.services:
            os.makedirs(os.path.join(base, "services"))
            for i, (instance, kind, port) in enumerate(self.services):
                path = os.path.join(base, "services", f"{i}.service")
                with open(path, "w", encoding="utf-8") as f:
                    f.write(_SERVICE_XML.format(name=instance, type=kind, port=port))
        if _in_user_namespace():
            _avahi_is_root(base)
        # By full path: the shell's PATH may lack sbin, where avahi-daemon lives.
        daemon = tool("avahi-daemon")
        self._spawn(
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            _AVAHI_RUN,
            "-",
            conf,
            daemon,
            base,
        )

    def _ready(self) -> None:
        # Logged once its host name has been probed and announced.
        self._wait_for_output(b"Server startup complete", 10.0)

    def client(self, *argv: str, timeout: float = 15) -> subprocess.CompletedProcess[str]:
        """Run an avahi-utils client (``avahi-resolve``, ``avahi-browse``) against this daemon."""
        if not self.dbus:
            raise LabError("the avahi clients need a daemon made with dbus=True")
        bus = f"DBUS_SYSTEM_BUS_ADDRESS=unix:path={os.path.join(self._dir.name, 'bus')}"
        return self.lab.run(self.ns, "env", bus, *resolve(argv), check=False, timeout=timeout)

    def resolve(self, name: str, family: int) -> list[str]:
        """The addresses ``avahi-resolve -4|-6 -n name`` prints (empty when it fails)."""
        out = self.client("avahi-resolve", f"-{family}", "-n", name).stdout
        return [line.split()[1] for line in out.splitlines() if len(line.split()) == 2]

    def browse(self, service_type: str) -> list[list[str]]:
        """The resolved services ``avahi-browse -r -t -p`` prints, one field list each."""
        out = self.client("avahi-browse", "-r", "-t", "-p", service_type).stdout
        return [line.split(";") for line in out.splitlines() if line.startswith("=")]


def _avahi_is_root(base: str) -> None:
    """Write a passwd and group in ``base`` where user and group ``avahi`` are uid/gid 0."""
    for name, fields in (("passwd", 4), ("group", 3)):
        with open(f"/etc/{name}", encoding="utf-8") as f:
            lines = [ln for ln in f.read().splitlines() if not ln.startswith("avahi:")]
        entry = "avahi:x:0:0:avahi:/:/bin/false" if fields == 4 else "avahi:x:0:"
        with open(os.path.join(base, name), "w", encoding="utf-8") as f:
            f.write("\n".join([*lines, entry]) + "\n")


class ZeroconfResponder(_Daemon):
    """A python-zeroconf responder in ``ns``: ``<name>.local`` and a ``_mcastio._udp`` service."""

    def __init__(self, lab: Lab, ns: str, name: str, addresses: Sequence[str]) -> None:
        super().__init__(lab, ns)
        self.name = name
        self.addresses = tuple(addresses)

    def _launch(self) -> None:
        self._spawn(sys.executable, "-c", _ZEROCONF_SCRIPT, self.name, *self.addresses, stdin=True)

    def _ready(self) -> None:
        self._wait_for_output(b"ready", 10.0)


class MiniDlna(_Daemon):
    """minidlna, a UPnP media server from Debian, answering SSDP M-SEARCH on ``ifname``."""

    def __init__(self, lab: Lab, ns: str, ifname: str, name: str) -> None:
        super().__init__(lab, ns)
        self.ifname = ifname
        self.name = name

    def _launch(self) -> None:
        base = self._dir.name
        for sub in ("media", "db"):
            os.makedirs(os.path.join(base, sub), exist_ok=True)
        conf = os.path.join(base, "minidlna.conf")
        with open(conf, "w", encoding="ascii") as f:
            f.write(
                f"network_interface={self.ifname}\nport=8200\nmedia_dir={base}/media\n"
                f"db_dir={base}/db\nlog_dir={base}\nfriendly_name={self.name}\n"
                "inotify=no\nnotify_interval=900\n"
            )
        # -d: stay in the foreground; -P: a pid file of its own.
        self._spawn("minidlnad", "-f", conf, "-d", "-P", os.path.join(base, "pid"), output=False)

    def _ready(self) -> None:
        # Its SSDP socket joins the group once it is ready to answer.
        try:
            self.lab.wait_for_membership(self.ns, self.ifname, "239.255.255.250", self._proc)
        except LabError:
            self.stop()
            raise
