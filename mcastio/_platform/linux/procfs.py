"""The kernel's state read as files: /proc/net, /proc/sys and /sys/class/net.

Every path mcastio reads there is built here, so that the one quirk they share is
handled once: a thread moved into another network namespace with setns() (the
test lab, a per-namespace worker) must read that namespace's files, which
/proc/net and /sys do not show it. The parsers of what is read are pure
(:mod:`.procnet` and :mod:`mcastio._discovery`'s); nothing here parses more
than an integer.
"""

from __future__ import annotations

import os

__all__ = ["netns", "proc_net_path", "read_proc_net", "read_text", "sysctl", "sysfs_says"]


def read_text(path: str) -> str | None:
    """The whole file, or None where it cannot be read (absent, no permission)."""
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def proc_net_path(name: str) -> str:
    """``/proc/net/<name>`` as seen by the calling thread's network namespace."""
    # /proc/net follows the thread-group leader; a thread moved by setns() (the
    # test lab, a per-namespace worker) needs /proc/thread-self/net instead.
    thread = f"/proc/thread-self/net/{name}"
    return thread if os.path.exists(thread) else f"/proc/net/{name}"


def read_proc_net(name: str) -> str | None:
    """``/proc/net/<name>`` of the calling thread's namespace, or None."""
    return read_text(proc_net_path(name))


def sysctl(name: str) -> str | None:
    """The value of sysctl ``name`` (``net/ipv4/igmp_max_memberships``), stripped, or None.

    /proc/sys/net is the calling thread's namespace's already (it follows the
    task that opens it, unlike /proc/net).
    """
    text = read_text(f"/proc/sys/{name}")
    return text.strip() if text is not None else None


def netns() -> int:
    """The calling thread's network namespace, as the inode number of its file (0: unknown)."""
    # /proc/self names the main thread's; a thread moved by setns() reads its own.
    for path in ("/proc/thread-self/ns/net", "/proc/self/ns/net"):
        try:
            return os.stat(path).st_ino
        except OSError:
            continue
    return 0


def sysfs_says(name: str, index: int, entries: tuple[str, ...]) -> bool:
    """Whether /sys/class/net/NAME has one of ``entries``, if that sysfs is this namespace's.

    sysfs shows the namespace of whoever mounted it, not of a thread moved with
    setns(), so the device's ifindex there must match before it is believed.
    """
    base = f"/sys/class/net/{name}"
    # The entries first: on most devices none exists, and the ifindex is not read.
    if not any(os.path.exists(f"{base}/{entry}") for entry in entries):
        return False
    try:
        with open(f"{base}/ifindex", encoding="ascii") as f:
            return int(f.read().strip()) == index
    except (OSError, ValueError):
        return False
