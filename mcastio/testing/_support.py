"""What a namespace lab needs from this host, and where its tools are.

Kept apart from :mod:`mcastio.testing` so the demo can ask whether a lab is
possible without building one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence

from .._errors import MulticastError

__all__ = [
    "LabError",
    "find_tool",
    "lab_support",
    "prepare_netns_dir",
    "read_capture",
    "resolve",
    "tcpdump_support",
    "tool",
]


class LabError(MulticastError, RuntimeError):
    """The lab could not be built or a command in it failed."""


def _in_user_namespace() -> bool:
    try:
        with open("/proc/self/uid_map", encoding="ascii") as f:
            first = f.read().split()
    except OSError:
        return False
    # The initial namespace maps the whole 32-bit range onto itself.
    return first[:3] != ["0", "0", "4294967295"]


#: Where system tools live besides $PATH: a plain user's login PATH often lacks
#: the sbin directories that hold ip, sysctl and tc.
_SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")

#: The tools a lab needs, with the Debian package that brings each.
_LAB_TOOLS = {"ip": "iproute2", "sysctl": "procps", "unshare": "util-linux"}


def find_tool(name: str) -> str | None:
    """The full path of system tool ``name``, searched on $PATH and then in sbin."""
    path = os.environ.get("PATH", os.defpath)
    return shutil.which(name, path=os.pathsep.join([path, *_SBIN]))


def tool(name: str) -> str:
    """:func:`find_tool`, or :class:`LabError` naming the package to install."""
    found = find_tool(name)
    if found is None:
        package = _PACKAGES.get(name, name)
        raise LabError(f"the '{name}' command is not installed (Debian package {package})")
    return found


_PACKAGES = {**_LAB_TOOLS, "tc": "iproute2", "nft": "nftables", "mount": "mount"}


def lab_support() -> str | None:
    """``None`` when labs can be built here, else the reason they cannot and the fix."""
    missing = [f"'{t}' ({pkg})" for t, pkg in _LAB_TOOLS.items() if find_tool(t) is None]
    if missing:
        return f"missing {', '.join(missing)}: install them (scripts/test does, as root)"
    if os.geteuid() != 0:
        return (
            "building network namespaces needs root or a user namespace; "
            "run under 'unshare -rnm' (scripts/test does this by itself)"
        )
    probe = subprocess.run(
        [tool("unshare"), "--net", "true"], capture_output=True, text=True, check=False
    )
    if probe.returncode != 0:
        return f"cannot create a network namespace: {probe.stderr.strip() or probe.returncode}"
    return _netns_dir_support()


def _netns_dir_support() -> str | None:
    """Why 'ip netns add' could not create its mount points, or ``None``."""
    # The answer is the mount itself: build() needs it anyway, and it happens once
    # (after it, /run is writable).
    try:
        prepare_netns_dir()
    except LabError as exc:
        return str(exc)
    return None


def tcpdump_support() -> str | None:
    """``None`` when :meth:`Lab.tcpdump` can run here, else the reason it cannot."""
    if find_tool("tcpdump") is None:
        return "tcpdump is not installed"
    if _in_user_namespace():
        # Debian's tcpdump always drops to its own user, and setgroups() is denied
        # in an unprivileged user namespace, so it exits before capturing.
        return "tcpdump cannot drop privileges inside an unprivileged user namespace"
    return None


def read_capture(path: str, *options: str) -> str:
    """What ``tcpdump -r path`` prints: a capture file read back, as text.

    Run as root, Debian's tcpdump drops to its own user even to read a file,
    which an unprivileged user namespace (``unshare -rnm``) refuses; there it
    runs in a nested user namespace as a plain user, who may read the file but
    has nothing to drop. Raises :class:`LabError` when tcpdump fails.
    """
    argv = [tool("tcpdump"), "-r", path, "-nn", *options]
    if _in_user_namespace():
        argv = [tool("unshare"), "--user", "--map-user=1", "--map-group=1", *argv]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
    if proc.returncode != 0:
        raise LabError(f"tcpdump -r {path}: {proc.stderr.strip()}")
    return proc.stdout


def prepare_netns_dir() -> None:
    if os.access("/run/netns", os.W_OK) or os.access("/run", os.W_OK):
        return
    if _in_user_namespace():
        # In 'unshare -rnm' /run belongs to the real root; a private tmpfs lets
        # 'ip netns add' create its mount points.
        proc = subprocess.run(
            [tool("mount"), "-t", "tmpfs", "mcastio-netns", "/run"],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode == 0:
            return
        raise LabError(
            f"cannot mount a private /run for 'ip netns': {proc.stderr.strip()}; "
            "a user namespace needs its own mount namespace for that: run under "
            "'unshare -rnm' (with -m), not 'unshare -rn'"
        )
    raise LabError("/run is not writable, so 'ip netns add' cannot create /run/netns")


def resolve(argv: Sequence[str]) -> list[str]:
    """``argv`` with a bare command name replaced by its full path.

    'ip netns exec' looks the command up on the inherited $PATH, which for a plain
    user often lacks sbin (sysctl, tc, nft).
    """
    if not argv or "/" in argv[0]:
        return list(argv)
    found = find_tool(argv[0])
    return [found or argv[0], *argv[1:]]
