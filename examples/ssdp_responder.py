"""A small SSDP responder: answer every M-SEARCH on every link, IPv4 and IPv6.

Usage::

    python examples/ssdp_responder.py [--uuid UUID] [--device-type URN] [--http-port P]
    sudo python examples/ssdp_responder.py --lab    # in a namespace lab, never on your network

UPnP devices answer a search (``M-SEARCH``, multicast to 239.255.255.250:1900,
ff02::c or ff05::c) by unicast to the searcher's address and port, after a random
delay of up to ``MX`` seconds. The answer's ``LOCATION`` must be an address the
searcher can reach: the address of the link the search came in on, which is what
``ep.answer(dgram, ...)`` leaves from. One :class:`mcastio.DualStackEndpoint`
with ``source_port="group"`` answers from port 1900 on every link.

Not done, as a small example: the NOTIFY announcements (``ssdp:alive``/``byebye``)
and the HTTP server behind ``LOCATION``. ``--lab`` runs it in a
:class:`mcastio.testing.Lab` and searches from each peer.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import random
import signal
import socket
import sys
from collections.abc import Sequence

import mcastio

SSDP_V4, SSDP_V6, SSDP_PORT = "239.255.255.250", "ff02::c", 1900
MAX_DELAY = 1.0  # the longest an answer waits, whatever MX says (UPnP allows up to 5 s)

_log = logging.getLogger("ssdp_responder")


def parse_search(data: bytes) -> dict[str, str] | None:
    """The headers of an ``M-SEARCH``, upper-cased names; None for anything else."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    lines = text.split("\r\n")
    if not lines[0].upper().startswith("M-SEARCH * HTTP/1.1"):
        return None
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().upper()] = value.strip()
    if headers.get("MAN", "").strip('"') != "ssdp:discover" or "ST" not in headers:
        return None
    return headers


class Device:
    """One root device: which search targets it matches and how it answers them."""

    def __init__(self, uuid: str, device_type: str, http_port: int) -> None:
        self.uuid = uuid
        self.device_type = device_type
        self.http_port = http_port

    def targets(self, st: str) -> list[str]:
        """The ST values to answer ``st`` with (``ssdp:all``: each of them)."""
        mine = ["upnp:rootdevice", f"uuid:{self.uuid}", self.device_type]
        if st == "ssdp:all":
            return mine
        return [st] if st in mine else []

    def response(self, st: str, address: str) -> bytes:
        host = f"[{address}]" if ":" in address else address
        usn = f"uuid:{self.uuid}" + ("" if st.startswith("uuid:") else f"::{st}")
        return (
            "HTTP/1.1 200 OK\r\n"
            "CACHE-CONTROL: max-age=1800\r\n"
            "EXT:\r\n"
            f"LOCATION: http://{host}:{self.http_port}/description.xml\r\n"
            "SERVER: Linux/1.0 UPnP/1.1 mcastio-example/1.0\r\n"
            f"ST: {st}\r\n"
            f"USN: {usn}\r\n"
            "\r\n"
        ).encode()


def link_address(iface: mcastio.Interface, source: str) -> str | None:
    """This host's address on ``iface`` that a searcher at ``source`` reaches."""
    peer = ipaddress.ip_address(source.split("%")[0])
    if isinstance(peer, ipaddress.IPv4Address):
        return next((str(a.ip) for a in iface.ipv4 if peer in a.network), None)
    for a in iface.ipv6:
        # A link-local searcher gets the link-local address, any other one its prefix's.
        if a.ip.is_link_local if peer.is_link_local else peer in a.network:
            return str(a.ip)
    return None


async def answer(ep: mcastio.DualStackEndpoint, device: Device, dgram: mcastio.Datagram) -> None:
    headers = parse_search(dgram.data)
    if headers is None:
        return
    family_ep = ep.ipv6 if ":" in dgram.source[0] else ep.ipv4
    iface = (
        next((i for i in family_ep.interfaces if i.name == dgram.interface), None)
        if family_ep
        else None
    )
    address = link_address(iface, dgram.source[0]) if iface else None
    targets = device.targets(headers["ST"])
    if address is None or not targets:
        return
    try:
        mx = max(0.0, float(headers.get("MX", "1")))
    except ValueError:
        mx = 1.0
    await asyncio.sleep(random.uniform(0, min(mx, MAX_DELAY)))
    for st in targets:
        try:
            await ep.answer(dgram, device.response(st, address))
        except mcastio.MulticastError as exc:  # NotOnLinkError, InterfaceGoneError, ...
            _log.warning("not answering %s on %s: %s", dgram.source[0], dgram.interface, exc)
            return


async def serve(ep: mcastio.DualStackEndpoint, device: Device, sub: mcastio.Subscription) -> None:
    """Answer every search ``sub`` delivers until cancelled; each answer waits on its own."""
    pending: set[asyncio.Task[None]] = set()
    try:
        async for dgram in sub:
            task = asyncio.ensure_future(answer(ep, device, dgram))
            pending.add(task)
            task.add_done_callback(pending.discard)
    finally:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


async def run(device: Device, *, interfaces: Sequence[str] | None = None) -> None:
    async with mcastio.DualStackEndpoint(
        SSDP_V4, SSDP_V6, SSDP_PORT, source_port="group", interfaces=interfaces
    ) as ep:
        task = asyncio.ensure_future(serve(ep, device, ep.subscribe()))
        names = ",".join(sorted({i.name for e in (ep.ipv4, ep.ipv6) if e for i in e.interfaces}))
        print(f"ready uuid:{device.uuid} on {names}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _lab_demo(uuid: str) -> int:
    """Run the responder in a lab's host and search from each peer."""
    import subprocess

    from mcastio.testing import Lab

    search = (
        b"M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\n"
        b'MAN: "ssdp:discover"\r\nMX: 1\r\nST: upnp:rootdevice\r\n\r\n'
    )
    with Lab(links=2) as lab:
        proc = lab.popen(
            lab.host,
            sys.executable,
            __file__,
            "--uuid",
            uuid,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert proc.stdout is not None
        print(proc.stdout.readline().decode().strip())
        for link in lab.link:
            with lab.inside(link.peer_ns):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            with sock:
                sock.settimeout(3)
                sock.sendto(search, (SSDP_V4, SSDP_PORT))
                data, source = sock.recvfrom(2048)
            location = next(ln for ln in data.decode().split("\r\n") if ln.startswith("LOCATION"))
            print(f"{link.peer_if}: {location} (from {source[0]}:{source[1]})")
        proc.terminate()
        proc.wait(5)
        proc.stdout.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uuid", default="6d636173-7469-6f00-0000-000000000001")
    parser.add_argument("--device-type", default="urn:schemas-upnp-org:device:Basic:1")
    parser.add_argument("--http-port", type=int, default=8080)
    parser.add_argument("--interface", action="append", dest="interfaces")
    parser.add_argument("--lab", action="store_true", help="run in a namespace lab (root)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    if args.lab:
        return _lab_demo(args.uuid)
    asyncio.run(
        run(Device(args.uuid, args.device_type, args.http_port), interfaces=args.interfaces)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
