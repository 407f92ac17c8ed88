"""Without CAP_NET_RAW, ``keepalive_state`` says when its refreshes may not reach the wire.

The unprivileged keeper blocks and unblocks a source that never sends; the kernel
reports the filter change. When another socket on the host holds the same group
in any-source mode, the host's combined filter does not change and nothing is
sent: the keeper must not count that as a refresh.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from mcastio.testing import Lab
from tests.conftest import require
from tests.switchlab import start_tcpdump, stop_tcpdump
from tests.test_keepalive_lab import _UNPRIVILEGED, ROOT

pytestmark = pytest.mark.lab

GROUP = "239.255.23.7"

# Another program on the host holding the group on the same link, any-source.
_HOLDER = r"""
import socket, struct, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
index = socket.if_nametoindex(sys.argv[2])
mreq = struct.pack("4s4si", socket.inet_aton(sys.argv[1]), bytes(4), index)
s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
print("held", flush=True)
time.sleep(60)
"""


def test_unprivileged_keeper_does_not_claim_refreshes_another_socket_swallows(
    need_tcpdump: None, make_lab: Callable[..., Lab]
) -> None:
    require(None if shutil.which("setpriv") else "setpriv (util-linux) is not installed")
    # The holder's join is repeated once, 0.1 s later, not up to 1 s later.
    unsolicited = "net.ipv4.conf.default.igmpv3_unsolicited_report_interval"
    lab = make_lab(links=1, ipv6=False, sysctls={unsolicited: "100"})
    ifname = lab.link[0].host_if
    holder = lab.popen(
        lab.host, sys.executable, "-c", _HOLDER, GROUP, ifname, stdout=subprocess.PIPE
    )
    assert holder.stdout is not None
    assert holder.stdout.readline() == b"held\n"
    time.sleep(0.3)  # past the holder's own repeated report
    dump = start_tcpdump(lab, lab.host, ifname, "igmp")
    proc = lab.run(
        lab.host,
        "setpriv", "--bounding-set=-net_raw", "--inh-caps=-net_raw",
        "env", f"PYTHONPATH={ROOT}", sys.executable, "-c", _UNPRIVILEGED,
        GROUP, "42307", ifname, "1.2",
    )  # fmt: skip
    packets = stop_tcpdump(dump)
    holder.terminate()
    holder.communicate(timeout=5)
    [state] = json.loads(proc.stdout.splitlines()[-1])["states"]
    # The endpoint's join is no report either: the host already held the group.
    reports = [p for p in packets if GROUP in p and "report" in p]
    print(f"unprivileged keeper beside a holder: {state}; {len(reports)} reports on the wire")
    assert state["mechanism"] == "source-filter"
    assert reports == [], "the source-filter change did send: the premise is gone"
    assert state["refreshes"] == 0, state
    assert state["role"] == "unable", state
    assert "another socket on this host holds" in state["reason"]
