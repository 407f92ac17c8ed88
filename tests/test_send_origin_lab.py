"""``mcastio send --tos/--dscp/--source/--source-port`` on the wire (issue 20).

tcpdump in the host namespace (``-i any``: every interface, each packet named
with its interface) shows the TOS byte or traffic class, the source address and
the source port of each copy, first as the kernel picks them, then as asked.
"""

from __future__ import annotations

import asyncio
import os
import re
import select
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from mcastio import MulticastEndpoint, MulticastError, create_multicast_endpoint, open_dual_stack
from mcastio.testing import Lab, tcpdump_argv
from tests.conftest import module_lab, run
from tests.test_cli_lab import mcastio_cmd

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("need_tcpdump")]


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    """Three links; eth1 holds a second address of each kind, so a source is a choice."""
    for lab in module_lab(links=3):
        lab.sh(lab.host, "ip addr add 10.200.1.5/24 dev eth1")
        lab.sh(lab.host, "ip -6 addr add fd00:1::5/64 dev eth1 nodad")
        lab.sh(lab.host, "ip -6 addr add fe80::5/64 dev eth1 nodad")
        yield lab


@dataclass(frozen=True)
class Packet:
    ifname: str
    tos: int
    source: str
    sport: int
    dport: int
    length: int


# "eth1  Out IP (tos 0xb8, ttl 1, ...) 10.200.1.5.40201 > 239.255.21.1.44201: ... length 2";
# IPv6 says "class 0x88" and leaves it out when it is 0.
_PACKET = re.compile(
    r"^(\S+)\s+Out IP6? \((.*?)\)\s+(\S+)\.(\d+) > \S+\.(\d+): .* length (\d+)$", re.M
)
_TOS = re.compile(r"\b(?:tos|class) (0x[0-9a-f]+)")


def packets(text: str) -> list[Packet]:
    # IPv4 packets take two lines in -vv output: join each continuation to its packet.
    text = re.sub(r"\n\s+(?=\S+\.\d+ > )", " ", text)
    found = []
    for m in _PACKET.finditer(text):
        tos = _TOS.search(m[2])
        found.append(
            Packet(m[1], int(tos[1], 16) if tos else 0, m[3], int(m[4]), int(m[5]), int(m[6]))
        )
    return found


class Wire:
    """tcpdump on every host interface, read as the packets arrive."""

    def __init__(self, lab: Lab, port: int) -> None:
        argv = [*tcpdump_argv(), "-t", "-vv", "-nn", "-l", "-i", "any", f"udp dst port {port}"]
        self.proc = lab.popen(lab.host, *argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.text = ""
        assert self.proc.stderr is not None
        while "listening on" not in (line := self.proc.stderr.readline().decode()):
            assert line, "tcpdump did not start"

    def until(self, length: int, copies: int, timeout: float = 10.0) -> list[Packet]:
        """Every packet so far, once ``copies`` of ``length`` bytes were seen."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while sum(p.length == length for p in packets(self.text)) < copies:
            ready, _, _ = select.select([fd], [], [], max(deadline - time.monotonic(), 0))
            chunk = os.read(fd, 65536).decode() if ready else ""
            if not chunk:
                raise AssertionError(f"{copies} x {length} bytes not seen: {self.text!r}")
            self.text += chunk
        return packets(self.text)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.communicate(timeout=10)


def send(lab: Lab, *args: str) -> list[str]:
    """``mcastio send``'s lines (it must succeed)."""
    proc = lab.run(lab.host, *mcastio_cmd("send", *args), check=False)
    assert proc.returncode == 0, proc.stderr
    return [" ".join(line.split()) for line in proc.stdout.splitlines()]


def link_local(lab: Lab, ifname: str) -> str:
    """The kernel's own (EUI-64) link-local address of ``ifname``, not fe80::5."""
    out = lab.run(lab.host, "ip", "-6", "-o", "addr", "show", "dev", ifname, "scope", "link")
    found = [f.split("/")[0] for f in out.stdout.split() if f.startswith("fe80:")]
    return next(a for a in found if a != "fe80::5")


@pytest.mark.parametrize(
    ("n", "group", "mark", "tos"),
    [
        (1, "239.255.21.1", ["--dscp", "EF"], 0xB8),
        (2, "[ff05::21:2]", ["--tos", "0x2e"], 0x2E),
        (3, "[ff02::21:3]", ["--dscp", "af41"], 0x88),
    ],
    ids=["ipv4", "ipv6", "ipv6-link-local"],
)
def test_the_tos_source_address_and_port_on_the_wire_are_the_ones_asked(
    lab: Lab, n: int, group: str, mark: list[str], tos: int
) -> None:
    port, sport = 44200 + n, 40200 + n
    candidates = {
        1: ["10.200.1.1", "10.200.1.5"],
        2: ["fd00:1::1", "fd00:1::5"],
        3: [link_local(lab, "eth1"), "fe80::5"],
    }[n]
    wire = Wire(lab, port)
    try:
        # As the kernel picks them: TOS 0, an address of eth1's, an ephemeral port.
        assert send(lab, f"{group}:{port}", "abc", "-i", "eth1") == ["#1 eth1 sent 3 bytes"]
        [before] = wire.until(3, 1)
        assert (before.ifname, before.tos) == ("eth1", 0)
        assert before.source in candidates
        assert before.sport != sport
        # As asked: the address the kernel did not pick, so the choice shows.
        (asked,) = set(candidates) - {before.source}
        scoped = f"{asked}%eth1" if asked.startswith("fe80:") else asked
        lines = send(lab, f"{group}:{port}", "hi", *mark, "--source", scoped,
                     "--source-port", str(sport))  # fmt: skip
        assert lines == ["#1 eth1 sent 2 bytes"]  # only the interface holding the address
        # A copy out of every interface after it: anything else sent as asked came first.
        assert len(send(lab, f"{group}:{port}", "done")) == 3
        seen = wire.until(4, 3)
    finally:
        wire.stop()
    assert [p for p in seen if p.length == 2] == [Packet("eth1", tos, asked, sport, port, 2)]
    assert {p.ifname for p in seen if p.length == 4} == {"eth0", "eth1", "eth2"}


@pytest.mark.parametrize(
    ("n", "group", "family"),
    [(4, "239.255.21.4", socket.AF_INET), (5, "[ff02::21:5]", socket.AF_INET6)],
    ids=["ipv4", "ipv6"],
)
def test_the_groups_port_as_source_port_beside_a_program_listening_on_it(
    lab: Lab, n: int, group: str, family: socket.AddressFamily
) -> None:
    """--source-port PORT sends from the group's port while another program holds it."""
    port = 44200 + n
    wire = Wire(lab, port)
    with lab.inside():
        holder = socket.socket(family, socket.SOCK_DGRAM)
    try:
        # As avahi or socat would: the port taken, with SO_REUSEADDR.
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
        lines = send(lab, f"{group}:{port}", "hi", "--source-port", str(port), "--tos", "255")
        assert len(lines) == 3
        seen = wire.until(2, 3)
    finally:
        holder.close()
        wire.stop()
    assert sorted((p.ifname, p.sport, p.tos) for p in seen) == [
        (name, port, 0xFF) for name in ("eth0", "eth1", "eth2")
    ]


def test_a_source_address_follows_its_interface_and_a_taken_port_is_an_error(lab: Lab) -> None:
    lab.sh(lab.host, "ip addr add 10.200.2.7/24 dev eth2")

    async def names(ep: MulticastEndpoint, want: tuple[str, ...]) -> tuple[str, ...]:
        for _ in range(200):
            now = tuple(i.name for i in ep.interfaces)
            if now == want:
                break
            await asyncio.sleep(0.05)
        return now

    async def main() -> None:
        async with MulticastEndpoint(
            "239.255.21.6", 44206, source_address="10.200.2.7", join=False
        ) as ep:
            assert await names(ep, ("eth2",)) == ("eth2",)
            lab.sh(lab.host, "ip addr del 10.200.2.7/24 dev eth2")
            lab.sh(lab.host, "ip addr add 10.200.2.7/32 dev eth0")
            assert await names(ep, ("eth0",)) == ("eth0",)
            assert [r.interface for r in await ep.send_all(b"x")] == ["eth0"]
        # A fixed source port another program holds: refused, never shared.
        taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        taken.bind(("0.0.0.0", 40207))
        try:
            ep = MulticastEndpoint("239.255.21.7", 44207, source_port=40207, join=False)
            with pytest.raises(MulticastError, match="source port 40207 is in use"):
                await ep.start()
            await ep.aclose()
        finally:
            taken.close()
        nowhere = MulticastEndpoint("239.255.21.8", 44208, source_address="10.200.9.9")
        with pytest.raises(ValueError, match=r"10\.200\.9\.9 is not an address of this host"):
            await nowhere.start()
        await nowhere.aclose()

    try:
        with lab.inside():
            run(main())
    finally:
        lab.sh(lab.host, "ip addr del 10.200.2.7/32 dev eth0", check=False)


def test_dual_stack_and_protocol_endpoints_pass_the_origin_through(lab: Lab) -> None:
    # One port for both families' copies; each family's source from its own option.
    port, sport = 44209, 40209

    async def main() -> tuple[int, int]:
        async with await open_dual_stack(
            "239.255.21.9",
            "ff05::21:9",
            port,
            join=False,
            tos=0xB8,
            source_port=sport,
            source_address_v4="10.200.1.5",
            source_address_v6="fd00:1::5",
        ) as dual:
            result = await dual.send_all(b"dual!")
        transport, _ = await create_multicast_endpoint(
            asyncio.DatagramProtocol, "239.255.21.9", port, join=False, tos=0x88
        )
        try:
            sent = transport.endpoint.send_all_nowait(b"proto!")
        finally:
            transport.close()
            await transport.endpoint.aclose()
        return len(result.ipv4) + len(result.ipv6), len(sent)

    wire = Wire(lab, port)
    try:
        with lab.inside():
            dual_copies, proto_copies = run(main())
        seen = wire.until(6, 3)
    finally:
        wire.stop()
    # The source address narrows each family to eth1, the one interface holding it.
    assert (dual_copies, proto_copies) == (2, 3)
    assert sorted((p.ifname, p.tos, p.source, p.sport) for p in seen if p.length == 5) == [
        ("eth1", 0xB8, "10.200.1.5", sport),
        ("eth1", 0xB8, "fd00:1::5", sport),
    ]
    assert {(p.ifname, p.tos) for p in seen if p.length == 6} == {
        ("eth0", 0x88),
        ("eth1", 0x88),
        ("eth2", 0x88),
    }


def test_naming_an_interface_without_the_source_address_is_a_usage_error(lab: Lab) -> None:
    # eth1 holds 10.200.1.5, eth2 does not: copies could never leave eth2 from it.
    argv = mcastio_cmd("send", "239.255.21.10:44210", "x", "-i", "eth1", "-i", "eth2",
                       "--source", "10.200.1.5")  # fmt: skip
    proc = lab.run(lab.host, *argv, check=False)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert proc.stdout == ""
    assert "mcastio: --source 10.200.1.5 is not an address of eth2" in proc.stderr
    # Only the interface holding it: sent, exit 0.
    assert send(lab, "239.255.21.10:44210", "x", "-i", "eth1", "--source", "10.200.1.5") == [
        "#1 eth1 sent 1 byte"
    ]


def test_a_fixed_source_port_follows_a_new_address_on_its_interface(lab: Lab) -> None:
    # A fixed port cannot be bound twice (no SO_REUSEADDR, by design), so the
    # socket that holds it is pointed at the interface's new source in place.
    port, sport = 44211, 40211
    # The new address becomes the primary when the old one goes (Linux would
    # otherwise delete the secondaries with it): the interface stays, changed.
    lab.sh(lab.host, "sysctl -qw net.ipv4.conf.eth2.promote_secondaries=1")
    wire = Wire(lab, port)

    async def main() -> tuple[str, ...]:
        async with MulticastEndpoint(
            "239.255.21.11", port, source_port=sport, join=False, interfaces=["eth2"]
        ) as ep:
            lab.sh(lab.host, "ip addr add 10.200.2.77/24 dev eth2")
            lab.sh(lab.host, "ip addr del 10.200.2.1/24 dev eth2")
            for _ in range(200):
                if ep.interfaces and str(ep.interfaces[0].ipv4[0].ip) == "10.200.2.77":
                    break
                await asyncio.sleep(0.05)
            await ep.send_all(b"moved")
            return tuple(str(a.ip) for a in ep.interfaces[0].ipv4)

    try:
        with lab.inside():
            addresses = run(main())
        seen = wire.until(5, 1)
    finally:
        wire.stop()
        lab.sh(lab.host, "ip addr add 10.200.2.1/24 dev eth2", check=False)
        lab.sh(lab.host, "ip addr del 10.200.2.77/24 dev eth2", check=False)
    assert addresses == ("10.200.2.77",)
    assert [(p.ifname, p.source, p.sport) for p in seen if p.length == 5] == [
        ("eth2", "10.200.2.77", sport)
    ]
