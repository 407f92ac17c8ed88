"""The kernel's files read from a thread moved into a lab's namespace are that
namespace's: /proc/net through /proc/thread-self, sysctls, the namespace's inode."""

from __future__ import annotations

import threading

import pytest

from mcastio._platform.linux import procfs
from mcastio._platform.linux.procnet import parse_igmp
from mcastio.testing import Lab, lab_support
from tests.conftest import require

pytestmark = [pytest.mark.lab, pytest.mark.one_path]


def test_a_moved_thread_reads_its_namespace() -> None:
    require(lab_support())
    with Lab(links=1) as lab:
        lab.sh(lab.host, "sysctl -qw net.ipv4.igmp_max_memberships=37")
        lab.sh(lab.host, "ip link add procfs0 type veth peer name procfs1")
        lab.sh(lab.host, "ip link set procfs0 up")
        lab.sh(lab.host, "ip link set procfs1 up")
        seen: dict[str, object] = {}

        def worker() -> None:
            # Not the main thread: /proc/net shows the main thread's namespace
            # (the thread-group leader's), not this one's.
            with lab.inside(lab.host):
                seen["netns"] = procfs.netns()
                seen["igmp"] = {d.interface for d in parse_igmp(procfs.read_proc_net("igmp") or "")}
                seen["memberships"] = procfs.sysctl("net/ipv4/igmp_max_memberships")

        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
        assert seen["netns"] not in (0, procfs.netns())
        assert seen["igmp"] == {"lo", "eth0", "procfs0", "procfs1"}
        assert seen["memberships"] == "37"
    assert procfs.sysctl("net/ipv4/no_such_sysctl") is None
    assert procfs.read_text("/proc/net/no_such_file") is None
