"""What a namespace lab needs from this host, and where its tools are.

Kept apart from :mod:`mcastio.testing` so the demo can ask whether a lab is
possible without building one.
"""

from __future__ import annotations

import atexit
import fcntl
import functools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence

from .._errors import MulticastError

__all__ = [
    "LabError",
    "find_tool",
    "lab_support",
    "prepare_netns_dir",
    "read_capture",
    "resolve",
    "tcpdump_argv",
    "tcpdump_support",
    "tool",
    "userns_argv",
    "userns_shim_support",
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
    return userns_shim_support("tcpdump")


def tcpdump_argv() -> list[str]:
    """The command that starts tcpdump here (it needs :func:`tcpdump_support`)."""
    # Debian's tcpdump always drops to its own user: see userns_argv.
    return userns_argv(tool("tcpdump"))


def userns_shim_support(program: str) -> str | None:
    """``None`` when ``program`` can switch users here, else why it cannot."""
    if _in_user_namespace() and _userns_shim() is None:
        return (
            f"{program} switches users, which an unprivileged user namespace forbids, "
            "and no C compiler (gcc) is here to build the shim that lets it run there"
        )
    return None


def userns_argv(program: str) -> list[str]:
    """The command that starts ``program``, a daemon that switches users.

    In an unprivileged user namespace only its root is mapped: a daemon's own user
    (tcpdump's) does not exist there and setgroups() is denied, so such a
    daemon exits before it starts. There it runs with a shim under which every
    user and group name is the namespace's root and setgroups() does nothing.
    """
    if not _in_user_namespace():
        return [program]
    shim = _userns_shim()
    if shim is None:
        raise LabError(userns_shim_support(os.path.basename(program)) or "no shim")
    return [tool("env"), f"LD_PRELOAD={shim}", program]


_USERNS_SHIM_C = """
#include <grp.h>
#include <pwd.h>
#include <sys/types.h>
#include <unistd.h>
static struct passwd pw;
static struct group gr;
static char *no_members[] = {0};
struct passwd *getpwnam(const char *name) {
    pw.pw_name = (char *)name; pw.pw_passwd = (char *)"x";
    pw.pw_uid = getuid(); pw.pw_gid = getgid();
    pw.pw_gecos = (char *)""; pw.pw_dir = (char *)"/"; pw.pw_shell = (char *)"/bin/sh";
    return &pw;
}
struct group *getgrnam(const char *name) {
    gr.gr_name = (char *)name; gr.gr_passwd = (char *)"x";
    gr.gr_gid = getgid(); gr.gr_mem = no_members;
    return &gr;
}
int setgroups(size_t size, const gid_t *list) { (void)size; (void)list; return 0; }
int initgroups(const char *user, gid_t group) { (void)user; (void)group; return 0; }
"""


@functools.cache
def _userns_shim() -> str | None:
    """Build the user-namespace shim once per process; ``None`` without a compiler."""
    cc = find_tool("cc") or find_tool("gcc")
    if cc is None:
        return None
    where = tempfile.mkdtemp(prefix="mcastio-userns-")
    atexit.register(shutil.rmtree, where, True)
    source = os.path.join(where, "userns.c")
    with open(source, "w", encoding="ascii") as f:
        f.write(_USERNS_SHIM_C)
    shim = os.path.join(where, "userns.so")
    built = subprocess.run(
        [cc, "-shared", "-fPIC", "-o", shim, source], capture_output=True, check=False
    )
    return shim if built.returncode == 0 else None


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


def _run_is_ours() -> bool:
    """Whether /run is already the private tmpfs mounted below (by another worker)."""
    with open("/proc/self/mounts", encoding="utf-8") as mounts:
        return any(line.split()[:2] == ["mcastio-netns", "/run"] for line in mounts)


def prepare_netns_dir() -> None:
    if os.access("/run/netns", os.W_OK) or os.access("/run", os.W_OK):
        return
    if _in_user_namespace():
        # In 'unshare -rnm' /run belongs to the real root; a private tmpfs lets
        # 'ip netns add' create its mount points. The test workers share one mount
        # namespace: two that both mounted would hide the first one's /run/netns
        # under the second tmpfs, so one mounts, under a lock, and the rest see it.
        # The lock is the old /run directory itself, not a file in /tmp: a file
        # there outlives the run, and another user's copy (uid 0 in every user
        # namespace) cannot be opened.
        held = os.open("/run", os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(held, fcntl.LOCK_EX)
            if _run_is_ours():
                return
            proc = subprocess.run(
                [tool("mount"), "-t", "tmpfs", "mcastio-netns", "/run"],
                capture_output=True,
                text=True,
                check=False,
            )
        finally:
            os.close(held)
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
