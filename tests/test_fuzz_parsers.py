"""Property tests for every parser that reads network or kernel input.

IGMP/MLD from the wire, netlink messages, control messages, the ``--seq`` and
ping headers, and the /proc files: none may raise on any input. Each returns its
documented "nothing here" (``None``, :data:`NOT_A_QUERY`, an empty result) instead.
Valid inputs are built too, so a parser that rejected everything would fail.
"""

from __future__ import annotations

import ipaddress
import socket
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcastio import _igmp, _keeper
from mcastio._cli import pingstats, seqheader
from mcastio._platform.linux import mmsg as _mmsg
from mcastio._platform.linux import netlink as _netlink
from mcastio._platform.linux import procnet as _procnet

FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ADDR6 = st.builds(ipaddress.IPv6Address, st.binary(min_size=16, max_size=16))
ADDR4 = st.builds(ipaddress.IPv4Address, st.binary(min_size=4, max_size=4))

# Text shaped like /proc files: lines of tokens the real files hold, and some they
# never do (a Unicode digit, a word where a number goes), joined by tabs and spaces.
TOKEN = st.sampled_from(
    ["1", "2", "eth0", ":", "V3", "V²", "010000E0", "ff020000000000000000000000000001",
     "fe800000000000000000000000000001", "x", "²", "80", "40", "0:00000000", "-1", "Ip:", ""]
)  # fmt: skip
LINE = st.tuples(st.sampled_from(["", "\t", "\t\t\t\t"]), st.lists(TOKEN, max_size=7)).map(
    lambda t: t[0] + " ".join(t[1])
)
PROC_TEXT = (
    st.lists(LINE, max_size=8).map(lambda lines: "header\n" + "\n".join(lines))
    | st.text(alphabet="0123456789abcdefABCDEFVx :\t\n-²٣.", max_size=400)
    | st.text(max_size=200)
)


def _ipv4_igmp(igmp: bytes, ttl: int) -> bytes:
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(igmp), 0, 0, ttl, 2, 0, bytes(4), bytes(4)
    )
    return header + igmp


@FUZZ
@given(st.binary(max_size=80))
def test_check_query_never_raises(packet: bytes) -> None:
    query, why = _igmp.check_query("eth0", packet)
    assert query is None or why == ""
    # The lenient parser (doctor's capture) reads what the strict one accepts.
    if query is not None:
        assert _igmp.parse_query("eth0", packet) is not None


@FUZZ
@given(st.binary(max_size=40), st.integers(0, 255))
def test_check_igmp_on_an_ip_header_never_raises(igmp: bytes, ttl: int) -> None:
    query, _why = _igmp.check_igmp("eth0", _ipv4_igmp(igmp, ttl))
    if query is not None:
        assert (ttl == 1 and len(igmp) in (8,)) or len(igmp) >= 12
        assert query.group.is_multicast or int(query.group) == 0


@FUZZ
@given(st.integers(0, 1), st.sampled_from([0, 100, 255]))
def test_valid_igmp_queries_are_accepted(v3: int, code: int) -> None:
    if v3:
        message = struct.pack("!BBH4sBBH", 0x11, code, 0, bytes(4), 2, 125, 0)
    else:
        message = struct.pack("!BBH4s", 0x11, code, 0, bytes(4))
    message = message[:2] + struct.pack("!H", _igmp._checksum(message)) + message[4:]
    query, why = _igmp.check_igmp("eth0", _ipv4_igmp(message, 1))
    assert why == ""
    assert query is not None
    assert query.version == (3 if v3 else (1 if code == 0 else 2))


@FUZZ
@given(ADDR6, st.binary(max_size=64), st.none() | st.integers(0, 255), st.booleans(), ADDR6)
def test_check_mld_never_raises(
    source: ipaddress.IPv6Address,
    icmp: bytes,
    hop_limit: int | None,
    router_alert: bool,
    dest: ipaddress.IPv6Address,
) -> None:
    query, _why = _igmp.check_mld(
        "eth0", source, icmp, hop_limit=hop_limit, router_alert=router_alert, destination=dest
    )
    if query is not None:
        assert source.is_link_local
        assert router_alert
        assert hop_limit == 1


@FUZZ
@given(st.binary(max_size=48))
def test_has_router_alert_never_raises(hopopts: bytes) -> None:
    assert _igmp.has_router_alert(hopopts) in (True, False)


def test_router_alert_found_after_padding() -> None:
    assert _igmp.has_router_alert(bytes((58, 0, 5, 2, 0, 0, 1, 0)))
    assert _igmp.has_router_alert(bytes((58, 0, 0, 0, 5, 2, 0, 0)))
    assert not _igmp.has_router_alert(bytes((58, 0, 1, 4, 0, 0, 0, 0)))


@FUZZ
@given(st.binary(max_size=200))
def test_netlink_messages_never_raise(data: bytes) -> None:
    count, _overrun, links = _netlink.parse_messages(data)
    assert count >= len(links)


@FUZZ
@given(st.binary(max_size=200), st.integers(0, 16))
def test_control_messages_never_raise(block: bytes, start: int) -> None:
    _mmsg.parse_control(block, start)
    drops, rest = _mmsg.split_drops(block, start)
    assert drops is None or len(rest) < len(block)


@FUZZ
@given(
    st.lists(
        st.tuples(
            st.sampled_from([socket.IPPROTO_IP, socket.IPPROTO_IPV6, socket.SOL_SOCKET, 0]),
            st.integers(0, 70),
            st.binary(max_size=24),
        ),
        max_size=4,
    )
)
def test_ancillary_data_from_recvmsg_never_raises(anc: list[tuple[int, int, bytes]]) -> None:
    from mcastio._platform.linux import ancillary as _ancillary

    _ancillary.parse_pktinfo(anc)
    _ancillary.parse_extras(anc)


@FUZZ
@given(st.binary(max_size=64))
def test_seq_header_never_raises(data: bytes) -> None:
    header = seqheader.decode_header(data)
    if header is not None:
        assert (
            seqheader.encode_header(header.stream, header.seq, header.sent_ns)
            == data[: seqheader.HEADER_SIZE]
        )


@FUZZ
@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**63 - 1))
def test_seq_header_round_trips(stream: int, seq: int, sent_ns: int) -> None:
    header = seqheader.decode_header(seqheader.encode_header(stream, seq, sent_ns) + b"x")
    assert header == seqheader.SeqHeader(stream, seq, sent_ns)


@FUZZ
@given(st.binary(max_size=64))
def test_ping_message_never_raises(data: bytes) -> None:
    pingstats.decode(data)


@FUZZ
@given(PROC_TEXT)
def test_proc_parsers_never_raise(text: str) -> None:
    _procnet.parse_igmp(text)
    _procnet.parse_igmp_versions(text)
    _procnet.parse_igmp6(text)
    _procnet.parse_netstat(text)
    _procnet.parse_route(text)
    _procnet.parse_if_inet6(text)
    _keeper.parse_beacons(text)


@FUZZ
@given(st.dictionaries(st.text("eth0123", min_size=1, max_size=5), st.integers(1, 3), max_size=4))
def test_igmp_versions_read_what_parse_igmp_reads(versions: dict[str, int]) -> None:
    text = "Idx\tDevice    : Count Querier\tGroup    Users Timer\tReporter\n"
    for i, (name, version) in enumerate(versions.items()):
        text += f"{i + 1}\t{name:<10}:     1      V{version}\n"
        text += "\t\t\t\t010000E0     1 0:00000000\t\t0\n"
    assert _procnet.parse_igmp_versions(text) == versions
    parsed = {d.interface: int(d.querier[1:]) for d in _procnet.parse_igmp(text)}
    assert parsed == versions


@FUZZ
@given(ADDR6, st.integers(0, 255), st.binary(max_size=60))
def test_check_mld_packet_behind_a_real_ipv6_header_never_raises(
    source: ipaddress.IPv6Address, hop_limit: int, rest: bytes
) -> None:
    header = struct.pack("!IHBB16s16s", 6 << 28, len(rest), 0, hop_limit, source.packed, bytes(16))
    query, why = _igmp.check_mld_packet("eth0", header + rest)
    if query is not None:
        assert why == ""
        assert hop_limit == 1
