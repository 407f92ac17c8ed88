"""send_many against real peers: every datagram, in order, on every link; each way of sending."""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Iterator

import pytest

import mcastio
from mcastio import _drain, _net, _sendmany
from mcastio.testing import Lab, Link, lab_support
from tests.conftest import require, run

pytestmark = pytest.mark.lab

GROUP = "239.255.21.9"
PORT = 5742
# Runs of one size (GSO material), a lone size, and one too large for a GSO segment.
PAYLOADS = (
    [bytes([i % 256]) * 100 for i in range(150)]
    + [b"lone"]
    + [bytes([i]) * 1400 for i in range(70)]
    + [b"z" * 3000, b""]
)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    require(lab_support())
    with Lab(links=2, ipv6=False) as built:
        yield built


@pytest.fixture(params=["sendto"] if _drain.cdrain is None else ["gso", "sendmmsg", "sendto"])
def send_way(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """GSO and sendmmsg where the compiled extension was built; sendto is the pure path."""
    way: str = request.param
    if way == "sendto":
        monkeypatch.setattr(_drain, "cdrain", None)
    monkeypatch.setattr(_sendmany, "USE_GSO", way == "gso")
    return way


def listener(lab: Lab, link: Link) -> socket.socket:
    with lab.inside(link.peer_ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.bind((GROUP, PORT))
        index = socket.if_nametoindex(link.peer_if)
    mreq = struct.pack("=4s4si", socket.inet_aton(GROUP), b"\0" * 4, index)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    sock.settimeout(2)
    return sock


def received(sock: socket.socket, count: int) -> list[bytes]:
    return [sock.recv(65536) for _ in range(count)]


def test_every_datagram_arrives_in_order_on_every_link(lab: Lab, send_way: str) -> None:
    listeners = [listener(lab, link) for link in lab.link]

    async def main() -> tuple[mcastio.BatchSendResult, ...]:
        async with mcastio.MulticastEndpoint(GROUP, PORT, watch=False, loopback=False) as ep:
            return await ep.send_many(PAYLOADS)

    try:
        with lab.inside():
            results = run(main())
        assert sorted(r.interface for r in results) == [link.host_if for link in lab.link]
        assert {(r.sent, r.error) for r in results} == {(len(PAYLOADS), None)}
        assert all(r.ok for r in results)
        for sock in listeners:
            assert received(sock, len(PAYLOADS)) == PAYLOADS
    finally:
        for sock in listeners:
            sock.close()


def test_one_named_interface_and_a_burst_past_the_buffer(lab: Lab, send_way: str) -> None:
    link = lab.link[1]
    other = listener(lab, lab.link[0])
    mine = listener(lab, link)
    # More than the transmit socket's buffer takes at once: send_many waits for room.
    burst = [i.to_bytes(4, "big") * 250 for i in range(3000)]

    async def main() -> tuple[mcastio.BatchSendResult, ...]:
        async with mcastio.MulticastEndpoint(GROUP, PORT, watch=False, loopback=False) as ep:
            with pytest.raises(ValueError, match="not one of this endpoint"):
                await ep.send_many([b"x"], interface="nope")
            with pytest.raises(ValueError, match="exceeds the UDP maximum"):
                await ep.send_many([b"x" * 70000])
            got = await ep.send_many(burst, interface=link.host_if)
        with pytest.raises(mcastio.EndpointClosedError):
            await ep.send_many([b"x"])
        return got

    try:
        with lab.inside():
            results = run(main())
        assert results == (mcastio.BatchSendResult(link.host_if, len(burst)),)
        first = received(mine, 50)
        assert first == burst[:50]
        other.settimeout(0.2)
        with pytest.raises(TimeoutError):
            other.recv(10)
    finally:
        other.close()
        mine.close()


@pytest.mark.linux_profile(reason="UDP GSO: the portable profile sends one sendto per datagram")
def test_gso_state_is_per_interface_and_refusal_falls_back(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []

    def refuse_gso(
        fd: int, payloads: list[bytes], address: bytes, segment: int, control: bytes
    ) -> int:
        calls.append(segment)
        if segment:
            # What a device without checksum offload answers (udp_send_skb).
            raise OSError(errno.EIO, "Input/output error")
        # sendmmsg's outcome, by sendmsg with the same pktinfo (so this runs where the
        # extension was not built): the in_pktinfo (12 bytes) follows the cmsg header.
        head = socket.CMSG_LEN(0)
        cmsg = (socket.IPPROTO_IP, _net.IP_PKTINFO, control[head : head + 12])
        with socket.socket(fileno=os.dup(fd)) as sock:
            for payload in payloads:
                sock.sendmsg([payload], [cmsg], 0, (GROUP, PORT))
        return len(payloads)

    monkeypatch.setattr(_drain, "cdrain", type("Fake", (), {"send_many": staticmethod(refuse_gso)}))
    monkeypatch.setattr(_drain.cdrain, "MAX_SEND", 1024, raising=False)
    sock = listener(lab, lab.link[0])

    async def main() -> list[tuple[mcastio.BatchSendResult, ...]]:
        ep = mcastio.MulticastEndpoint(
            GROUP, PORT, watch=False, loopback=False, interfaces=[lab.link[0].host_if]
        )
        async with ep:
            return [await ep.send_many([b"a" * 10] * 5), await ep.send_many([b"b" * 10] * 5)]

    try:
        with lab.inside():
            first, second = run(main())
        assert first == second == (mcastio.BatchSendResult(lab.link[0].host_if, 5),)
        # GSO tried once, refused, then plain sendmmsg on that interface from then on.
        assert calls == [10, 0, 0]
        assert received(sock, 10) == [b"a" * 10] * 5 + [b"b" * 10] * 5
    finally:
        sock.close()


def test_results_are_frozen_values() -> None:
    result = mcastio.BatchSendResult("eth0", 3)
    assert result.ok
    assert not mcastio.BatchSendResult("eth0", 1, OSError(1, "x")).ok
    with pytest.raises(AttributeError):
        result.sent = 4  # type: ignore[misc]
