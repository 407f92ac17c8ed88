"""examples/mdns_responder.py, resolved by mDNS stacks nobody here wrote, on every link.

One lab for the module: the responder runs in the host (three links), and behind
each link avahi-daemon (with a private D-Bus for avahi-resolve and avahi-browse),
python-zeroconf and troglobit's mquery ask for its host name and its service.
Each must get the address of its own link, never another link's. What resolved
where is printed (``pytest -s``) for the record.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from mcastio.testing import Lab, Link, find_tool, lab_support
from mcastio.testing.responders import Avahi, responder_support, start_all
from tests.conftest import require, wait_ready_line

pytestmark = pytest.mark.lab

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "mdns_responder.py"
HOST, SERVICE, INSTANCE, SERVICE_PORT = "mcastio-lab", "_mcastio-demo._udp", "lab demo", 4242
T = TypeVar("T")

# Run in a peer: python-zeroconf resolves the host name (A, AAAA) and the service,
# as a full querier from 5353 or, with "unicast", as a legacy one from its own port.
_ZEROCONF_CLIENT = """
import json, sys
from zeroconf import AddressResolverIPv4, AddressResolverIPv6, IPVersion, ServiceInfo, Zeroconf
host, stype, instance, mode = sys.argv[1:]
zc = Zeroconf(ip_version=IPVersion.All, unicast=mode == "unicast")
out = {}
for key, cls, version in (
    ("A", AddressResolverIPv4, IPVersion.V4Only), ("AAAA", AddressResolverIPv6, IPVersion.V6Only)
):
    resolver = cls(host)
    resolver.request(zc, 3000)
    out[key] = resolver.parsed_addresses(version)
info = ServiceInfo(stype, instance + "." + stype)
info.request(zc, 3000)
out["SRV"] = [info.server, info.port, info.parsed_addresses(IPVersion.V4Only)]
zc.close()
print(json.dumps(out))
"""


@dataclass
class MdnsLab:
    lab: Lab
    avahi: list[Avahi]
    #: The host's IPv6 link-local address on each link, by host interface.
    link_local: dict[str, str]


def _host_link_local(lab: Lab) -> dict[str, str]:
    out: dict[str, str] = {}
    for link in lab.link:
        text = lab.run(
            lab.host, "ip", "-6", "-o", "addr", "show", "dev", link.host_if, "scope", "link"
        ).stdout
        out[link.host_if] = text.split()[3].split("/")[0]
    return out


@pytest.fixture(scope="module")
def mdns_lab() -> Iterator[MdnsLab]:
    require(lab_support())
    require(responder_support())
    needed = (("avahi-resolve", "avahi-utils"), ("dbus-daemon", "dbus-daemon"), ("mquery", "mdnsd"))
    for tool, package in needed:
        require(None if find_tool(tool) else f"{tool} is not installed (Debian {package})")
    with Lab(links=3) as lab:
        argv = ["--name", HOST, "--service", SERVICE, "--instance", INSTANCE]
        argv += ["--port", str(SERVICE_PORT)]
        responder = lab.popen(
            lab.host,
            sys.executable,
            str(EXAMPLE),
            *argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        avahi = [
            Avahi(lab, lk.peer_ns, [lk.peer_if], f"peer{lk.index}", dbus=True) for lk in lab.link
        ]
        start_all(avahi)
        try:
            assert "ready" in wait_ready_line(responder)
            yield MdnsLab(lab, avahi, _host_link_local(lab))
        finally:
            for daemon in avahi:
                daemon.stop()
            responder.terminate()
            # SIGTERM ends the example cleanly (its endpoint closes, exit status 0).
            assert responder.wait(10) == 0
            assert responder.stdout is not None
            responder.stdout.close()


def on_each_link(lab: Lab, ask: Callable[[Link], T]) -> list[T]:
    """``ask`` for every link at once (each client takes up to a few seconds)."""
    with ThreadPoolExecutor(len(lab.link)) as pool:
        return list(pool.map(ask, lab.link))


def own_v6(m: MdnsLab, link: Link) -> set[ipaddress.IPv6Address]:
    return {ipaddress.IPv6Address(a) for a in (link.host_addr6 or "", m.link_local[link.host_if])}


def test_avahi_resolves_the_host_name_to_each_links_own_address(mdns_lab: MdnsLab) -> None:
    m = mdns_lab

    def ask(link: Link) -> tuple[list[str], list[str]]:
        avahi = m.avahi[link.index]
        return avahi.resolve(f"{HOST}.local", 4), avahi.resolve(f"{HOST}.local", 6)

    results = on_each_link(m.lab, ask)
    print(f"\navahi-resolve: {dict(zip((lk.peer_if for lk in m.lab.link), results, strict=True))}")
    for link, (v4, v6) in zip(m.lab.link, results, strict=True):
        assert v4 == [link.host_addr]
        assert len(v6) == 1
        assert {ipaddress.IPv6Address(a) for a in v6} <= own_v6(m, link)


def test_avahi_browses_and_resolves_the_service_on_each_link(mdns_lab: MdnsLab) -> None:
    m = mdns_lab
    results = on_each_link(m.lab, lambda link: m.avahi[link.index].browse(SERVICE))
    print(f"\navahi-browse: {results}")
    for link, rows in zip(m.lab.link, results, strict=True):
        # =;iface;protocol;name;type;domain;host;address;port;txt
        found = {(r[1], r[2], r[6], r[8]) for r in rows}
        assert found == {
            (link.peer_if, proto, f"{HOST}.local", str(SERVICE_PORT)) for proto in ("IPv4", "IPv6")
        }
        for row in rows:
            address = ipaddress.ip_address(row[7])
            assert address == ipaddress.ip_address(link.host_addr) or address in own_v6(m, link)


@pytest.mark.parametrize("mode", ["multicast", "unicast"])
def test_zeroconf_resolves_name_and_service_on_each_link(mdns_lab: MdnsLab, mode: str) -> None:
    m = mdns_lab

    def ask(link: Link) -> dict[str, list[object]]:
        argv = [sys.executable, "-c", _ZEROCONF_CLIENT, f"{HOST}.local.", f"{SERVICE}.local."]
        proc = m.lab.run(link.peer_ns, *argv, INSTANCE, mode, timeout=30)
        result: dict[str, list[object]] = json.loads(proc.stdout)
        return result

    results = on_each_link(m.lab, ask)
    print(f"\nzeroconf ({mode}): {results}")
    for link, got in zip(m.lab.link, results, strict=True):
        assert got["A"] == [link.host_addr]
        v6 = {ipaddress.IPv6Address(str(a)) for a in got["AAAA"]}
        assert v6
        assert v6 <= own_v6(m, link)
        assert got["SRV"] == [f"{HOST}.local.", SERVICE_PORT, [link.host_addr]]


def _mquery(lab: Lab, link: Link, name: str, qtype: int) -> list[str]:
    # Asked again with a longer wait when nothing came, as a querier retransmits
    # (RFC 6762 §5.2): on a busy machine one second can pass before the answer.
    for wait in ("1", "3"):
        argv = ["mquery", "-i", link.peer_if, "-s", "-w", wait, "-t", str(qtype), name]
        out = lab.run(link.peer_ns, *argv, timeout=15).stdout
        # "A mcastio-lab.local. for 120 seconds to ip 10.200.0.1"
        records = [ln for ln in out.splitlines() if ln.startswith(("A ", "AAAA ", "PTR "))]
        if records:
            break
    return sorted({ln.split(" to ", 1)[1].removeprefix("ip ") for ln in records})


def test_mquery_resolves_name_and_service_on_each_link(mdns_lab: MdnsLab) -> None:
    m = mdns_lab

    def ask(link: Link) -> tuple[list[str], list[str], list[str]]:
        name = f"{HOST}.local."
        return (
            _mquery(m.lab, link, name, 1),
            _mquery(m.lab, link, name, 28),
            _mquery(m.lab, link, f"{SERVICE}.local.", 12),
        )

    results = on_each_link(m.lab, ask)
    print(f"\nmquery: {results}")
    for link, (a, aaaa, ptr) in zip(m.lab.link, results, strict=True):
        assert a == [link.host_addr]
        assert {ipaddress.IPv6Address(x) for x in aaaa} == own_v6(m, link)
        assert ptr == [f"{INSTANCE}.{SERVICE}.local."]


def legacy_query(name: str, qtype: int, query_id: int) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return (
        query_id.to_bytes(2, "big")
        + bytes(2)
        + b"\0\1"
        + bytes(6)
        + labels
        + bytes([0, qtype, 0, 1])
    )


def test_legacy_unicast_queries_get_unicast_answers_from_5353(
    mdns_lab: MdnsLab,
) -> None:
    """RFC 6762 §6.7: to the querier's port, from 5353, ID and question echoed, TTL <= 10."""
    m = mdns_lab
    rows: list[tuple[str, str, str, int, int]] = []
    for link in m.lab.link:
        for family, group, qtype in (
            (socket.AF_INET, "224.0.0.251", 1),
            (socket.AF_INET6, "ff02::fb", 28),
        ):
            with m.lab.inside(link.peer_ns):
                sock = socket.socket(family, socket.SOCK_DGRAM)
                index = socket.if_nametoindex(link.peer_if)
            with sock:
                sock.settimeout(3)
                if family == socket.AF_INET:
                    sock.setsockopt(
                        socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(link.peer_addr)
                    )
                    dest: tuple[str, int] | tuple[str, int, int, int] = (group, 5353)
                else:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
                    dest = (group, 5353, 0, index)
                query = legacy_query(f"{HOST}.local", qtype, 0x4000 + link.index)
                sock.sendto(query, dest)
                data, source = sock.recvfrom(4096)
            # ID echoed, QR and AA set, the question repeated verbatim.
            assert data[:2] == query[:2]
            assert data[2] & 0x84 == 0x84
            assert data[12 : len(query)] == query[12:]
            # The first answer: our name uncompressed, then type, class, TTL.
            rtype, rclass, ttl = struct.unpack_from("!HHI", data, len(query) + len(query) - 16)
            assert (rtype, rclass) == (qtype, 1)  # no cache-flush bit in a legacy answer
            assert ttl <= 10
            rows.append((link.peer_if, family.name, source[0], source[1], ttl))
            assert source[1] == 5353
            own = {ipaddress.ip_address(link.host_addr)} | set(own_v6(m, link))
            assert ipaddress.ip_address(source[0].split("%")[0]) in own
    print(f"\nlegacy unicast answers: {rows}")


def test_the_lab_mode_of_the_example_answers_each_peer() -> None:
    require(lab_support())
    argv = [sys.executable, str(EXAMPLE), "--lab", "--name", "demo"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[1:] == [
        f"veth{n} asked demo.local: 10.200.{n}.1 (from 10.200.{n}.1:5353)" for n in (0, 1)
    ]
