"""The watcher under faults on real kernels: out of descriptors, and links flapping under load.

Descriptor exhaustion runs in a subprocess with a low RLIMIT_NOFILE; the campaign
flaps every link of a lab while the endpoint sends and peers flood it, then checks
that it converged, and that sockets and memory stayed bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import threading
import tracemalloc
from collections.abc import Callable

import pytest

from mcastio import MulticastEndpoint
from mcastio.testing import Lab
from tests.conftest import run, wait_for
from tests.test_faults_lab import GROUP, PORT, receive_from_each, record_loop_errors

pytestmark = pytest.mark.lab

# -- item 2: EMFILE, in a subprocess with a low RLIMIT_NOFILE ----------------------------

EMFILE_CHILD = r"""
import asyncio, json, logging, os, resource, sys
import mcastio
from mcastio._watch import Backoff

group, port = sys.argv[1], int(sys.argv[2])
warnings = []

class Keep(logging.Handler):
    def emit(self, record):
        warnings.append(record.getMessage())

logging.getLogger("mcastio").addHandler(Keep(logging.WARNING))
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)

def allow(free):
    # RLIMIT_NOFILE bounds descriptor numbers and the kernel hands out the lowest
    # free one: leave exactly `free` unused numbers below the limit.
    names = os.listdir("/proc/self/fd")
    used = {int(n) for n in names if os.path.exists(f"/proc/self/fd/{n}")}
    unused = [n for n in range(soft) if n not in used]
    resource.setrlimit(resource.RLIMIT_NOFILE, (unused[free], hard))

def restore():
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

async def start_under_limits():
    outcomes = []
    for watch in (False, True):
        for free in range(6):
            ep = mcastio.MulticastEndpoint(group, port, watch=watch)
            allow(free)
            try:
                await ep.start()
                outcomes.append(["started", len(ep.interfaces)])
            except mcastio.MulticastError as exc:
                outcomes.append(["MulticastError", str(exc)])
            except OSError as exc:
                outcomes.append(["OSError", str(exc)])
            finally:
                restore()
                await ep.aclose()
    return outcomes

async def watch_under_limit():
    # The group's port: a transmit socket per interface, so each new link needs a
    # descriptor (a port of its own would send every link's copies through one).
    async with mcastio.MulticastEndpoint(group, port, source_port="group") as ep:
        ep._engine.watcher._backoff = Backoff(first=0.05, cap=0.2)
        before = [i.name for i in ep.interfaces]
        print("ready", flush=True)
        allow(1)
        # Block the loop while the parent adds two links, so one reconcile sees both.
        sys.stdin.readline()
        await asyncio.sleep(0.6)
        during = {
            "mode": ep.watch_mode,
            "alive": not ep._engine.watcher._task.done(),
            "names": [i.name for i in ep.interfaces],
        }
        restore()
        for _ in range(300):
            if len(ep.interfaces) == len(before) + 2:
                break
            await asyncio.sleep(0.01)
        after = {"mode": ep.watch_mode, "names": [i.name for i in ep.interfaces]}
        return {"before": before, "during": during, "after": after}

async def main():
    result = {"start": await start_under_limits()}
    result["watch"] = await watch_under_limit()
    result["warnings"] = warnings
    print(json.dumps(result), flush=True)

asyncio.run(main())
"""


def test_emfile_is_a_multicast_error_and_the_watcher_retries(
    make_lab: Callable[..., Lab],
) -> None:
    lab = make_lab(links=3, ipv6=False)
    child = lab.popen(
        lab.host,
        sys.executable,
        "-c",
        EMFILE_CHILD,
        GROUP,
        str(PORT),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert child.stdout is not None
    assert child.stdin is not None
    line = child.stdout.readline()
    assert line == b"ready\n", line + (child.stderr.read() if child.stderr else b"")
    lab.add_link()
    lab.add_link()
    child.stdin.write(b"go\n")
    child.stdin.flush()
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err.decode()
    result = json.loads(out)
    kinds = {kind for kind, _ in result["start"]}
    # Every start either worked or failed with a MulticastError naming the cause.
    assert "OSError" not in kinds, result["start"]
    refusals = [text for kind, text in result["start"] if kind == "MulticastError"]
    assert refusals
    assert all("Too many open files" in text for text in refusals), refusals
    assert ["started", 3] in result["start"]
    watch = result["watch"]
    assert watch["before"] == ["eth0", "eth1", "eth2"]
    # One new link got the last descriptor; the other one's transmit socket failed,
    # and the watcher lived on, still saying how it watches.
    assert watch["during"] == {
        "mode": "netlink",
        "alive": True,
        "names": ["eth0", "eth1", "eth2", "eth3"],
    }
    assert any(
        "transmit socket on eth4" in w and "Too many open files" in w for w in result["warnings"]
    ), result["warnings"]
    assert watch["after"] == {"mode": "netlink", "names": [f"eth{n}" for n in range(5)]}


# -- the fault campaign: flapping links under send and receive load -----------------------

PEER_SENDER = r"""
import socket, sys, time
group, port, source = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(source))
n = 0
while True:
    try:
        s.sendto(b"peer %d" % n, (group, port))
    except OSError:
        pass  # the link is down right now: keep going
    n += 1
    time.sleep(0.0005)
"""


def open_sockets() -> int:
    """Sockets this process holds (the flapping thread's pipes are not counted)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # closed meanwhile
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return count


def test_flapping_links_under_load_converge_without_leaks(lab: Lab) -> None:
    for link in lab.link:
        lab.popen(
            link.peer_ns,
            sys.executable,
            "-c",
            PEER_SENDER,
            GROUP,
            str(PORT),
            link.peer_addr,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    # Fifteen flaps per link (admin down/up, and carrier loss from the peer side),
    # each pair of commands in one ip process, so the notifications come in bursts.
    rounds = []
    for n in range(45):
        link = lab.link[n % 3]
        rounds.append((lab.host, f"link set {link.host_if} down\nlink set {link.host_if} up\n"))
        rounds.append((link.peer_ns, f"link set {link.peer_if} down\nlink set {link.peer_if} up\n"))

    def flap() -> None:
        for ns, commands in rounds:
            subprocess.run(
                ["ip", "netns", "exec", ns, "ip", "-batch", "-"],
                input=commands,
                text=True,
                check=True,
            )

    async def main() -> dict[str, object]:
        reported = record_loop_errors()
        fds = open_sockets()
        tracemalloc.start()
        try:
            async with MulticastEndpoint(GROUP, PORT, queue_size=256) as ep:
                sub = ep.subscribe()
                received = 0
                stop = asyncio.Event()
                sent = failed = 0
                peak_fds = 0

                async def sender() -> None:
                    nonlocal sent, failed, peak_fds
                    while not stop.is_set():
                        for result in await ep.send_all(b"load"):
                            sent += result.ok
                            failed += not result.ok
                        peak_fds = max(peak_fds, open_sockets())
                        await asyncio.sleep(0.0005)

                async def reader() -> None:
                    nonlocal received
                    while not stop.is_set():
                        received += len(await sub.get_batch())

                tasks = [asyncio.create_task(sender()), asyncio.create_task(reader())]
                # Memory under steady load first, so the queues are already full.
                await asyncio.sleep(0.2)
                base_memory = tracemalloc.get_traced_memory()[0]
                flapper = threading.Thread(target=flap)
                flapper.start()
                await asyncio.to_thread(flapper.join)
                # Converged: every link in use again, watched, and each one delivering.
                want = {link.host_if for link in lab.link}
                await wait_for(lambda: {i.name for i in ep.interfaces} == want, what="converged")
                fresh = ep.subscribe()
                seen = await receive_from_each(fresh, want)
                memory = tracemalloc.get_traced_memory()[0]
                stop.set()
                sub.close()
                await asyncio.gather(*tasks)
                return {
                    "mode": ep.watch_mode,
                    "seen": seen,
                    "sent": sent,
                    "failed": failed,
                    "received": received,
                    "fd_growth": peak_fds - fds,
                    "memory_growth": memory - base_memory,
                    "reported": reported,
                }
        finally:
            tracemalloc.stop()

    with lab.inside():
        result = run(main())
    assert result["reported"] == []
    assert result["mode"] == "netlink"
    assert result["seen"] == {link.host_if for link in lab.link}
    numbers = {k: v for k, v in result.items() if isinstance(v, int)}
    assert numbers["sent"] > 100, result
    assert numbers["received"] > 100, result
    # A receive socket, three transmit sockets, the netlink socket and the keeper's
    # raw socket and doctor beacon, plus one for a transmit socket being replaced:
    # never one per flap.
    assert numbers["fd_growth"] <= 8, result
    # Bounded queues and no per-flap leftovers: flapping under load costs no memory.
    assert numbers["memory_growth"] < 500_000, result
