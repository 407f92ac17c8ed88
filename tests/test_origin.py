"""Where sends come from and how they are marked (issue 20): the pure checks.

``tos``, ``source_address`` and a numeric ``source_port`` are checked before any
socket exists; the source address narrows the endpoint to the interfaces holding
it. tests/test_send_origin_lab.py shows the same options on the wire.
"""

from __future__ import annotations

import argparse
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcastio import MulticastEndpoint
from mcastio._cli import validate
from mcastio._model import parse_group
from mcastio._options import EndpointOptions
from mcastio._origin import NO_ORIGIN, Origin, fixed_source_port, validate_tos
from tests.test_model import iface

G4 = parse_group("239.255.0.1")
G6 = parse_group("ff02::1:3")
SNAPSHOT = (
    iface("lo", 1, "127.0.0.1/8", "::1/128", loopback=True),
    iface("eth0", 2, "10.0.0.1/24", "fe80::1/64", "fd00::1/64"),
    iface("eth1", 3, "10.0.1.1/24", "10.0.1.5/24", "fe80::1/64", "fd00:1::5/64"),
    iface("eth2", 4, "10.0.2.1/24", "fe80::2/64", up=False),
)


@given(st.one_of(st.integers(-1000, 1000), st.booleans(), st.floats(), st.text(max_size=3)))
def test_tos_is_a_byte_and_nothing_else(value: object) -> None:
    ok = type(value) is int and 0 <= value <= 255
    if ok:
        assert validate_tos(value) == value  # type: ignore[arg-type]
    else:
        with pytest.raises(ValueError, match="tos must be the TOS / traffic class byte"):
            validate_tos(value)  # type: ignore[arg-type]


@given(st.integers(-300, 300))
def test_cli_dscp_numbers_are_six_bits_made_the_tos_byte(value: int) -> None:
    if 0 <= value <= 63:
        assert validate.dscp(str(value)) == value << 2
        assert validate.dscp(hex(value)) == value << 2
    else:
        with pytest.raises(argparse.ArgumentTypeError, match="from 0 to 63"):
            validate.dscp(str(value))


@given(st.integers(-300, 600))
def test_cli_tos_takes_a_byte_in_decimal_or_hex(value: int) -> None:
    for text in (str(value), hex(value)):
        if 0 <= value <= 255:
            assert validate.tos(text) == value
        else:
            with pytest.raises(argparse.ArgumentTypeError, match="from 0 to 255"):
                validate.tos(text)


@pytest.mark.parametrize(
    ("name", "tos"),
    [("EF", 0xB8), ("ef", 0xB8), ("AF41", 0x88), ("AF11", 0x28), ("AF43", 0x98), ("CS1", 0x20),
     ("CS7", 0xE0), ("BE", 0), ("VA", 0xB0), ("LE", 0x04)],
)  # fmt: skip
def test_cli_dscp_names_are_the_standard_code_points(name: str, tos: int) -> None:
    assert validate.dscp(name) == tos


@pytest.mark.parametrize("text", ["AF44", "EF1", "", "x", "0x40", "-1"])
def test_cli_dscp_refuses_what_is_no_dscp(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        validate.dscp(text)


@given(st.integers(-5, 70000))
def test_cli_source_port_is_a_port(value: int) -> None:
    if 1 <= value <= 65535:
        assert validate.port(str(value)) == value
    else:
        with pytest.raises(argparse.ArgumentTypeError, match="from 1 to 65535"):
            validate.port(str(value))


@given(st.integers(1, 65535), st.integers(1, 65535))
def test_a_numeric_source_port_is_fixed_unless_it_is_the_groups(asked: int, port: int) -> None:
    mode, fixed = fixed_source_port(asked, port)
    assert (mode, fixed) == (("group", None) if asked == port else ("ephemeral", asked))


def test_build_keeps_the_origin_and_reports_the_port() -> None:
    opts = EndpointOptions.build(
        "239.255.0.1", 5000, tos=0xB8, source_address="10.0.1.5", source_port=4000
    )
    assert opts.origin == Origin(tos=0xB8, address="10.0.1.5", scope=None, port=4000)
    assert opts.source_port == "ephemeral"  # its own port: replies are read
    assert EndpointOptions.build("239.255.0.1", 5000).origin == NO_ORIGIN
    assert EndpointOptions.build("239.255.0.1", 5000, source_port=5000).source_port == "group"
    six = EndpointOptions.build("ff02::1:3", 5000, source_address="FE80:0::1%eth1")
    assert (six.origin.address, six.origin.scope) == ("fe80::1", "eth1")
    ep = MulticastEndpoint("239.255.0.1", 5000, source_port=4000, join=False)
    assert ep.source_port == 4000
    assert MulticastEndpoint("239.255.0.1", 5000, source_port=5000).source_port == "group"


@pytest.mark.parametrize(
    ("group", "kwargs", "needle"),
    [
        ("239.1.1.1", {"tos": 256}, "tos must be the TOS / traffic class byte from 0 to 255"),
        ("239.1.1.1", {"tos": -1}, "tos must be"),
        ("239.1.1.1", {"tos": True}, "tos must be"),
        ("239.1.1.1", {"source_port": 0}, "source_port must be 'ephemeral', 'group' or a port"),
        ("239.1.1.1", {"source_port": 65536}, "a port from 1 to 65535"),
        ("239.1.1.1", {"source_port": 5.0}, "not 5.0"),
        ("239.1.1.1", {"source_port": "4000"}, "or a port number, not '4000'"),
        ("239.1.1.1", {"source_address": "x"}, "source_address 'x' is not an IP address"),
        ("239.1.1.1", {"source_address": "239.1.1.2"}, "must be a unicast address"),
        ("239.1.1.1", {"source_address": "127.0.0.1"}, "not multicast, unspecified or loopback"),
        ("239.1.1.1", {"source_address": "0.0.0.0"}, "must be a unicast address"),
        ("239.1.1.1", {"source_address": "fd00::1"}, "is IPv6; the group 239.1.1.1 is IPv4"),
        ("ff02::1", {"source_address": "10.0.0.1"}, "is IPv4; the group ff02::1 is IPv6"),
        ("ff02::1", {"source_address": "fd00::1%eth0"}, "only a link-local address takes"),
        ("ff02::1", {"source_address": "fd00::1", "source_port": "group"}, "over IPv6"),
        ("ff02::1", {"source_address": "fe80::1%eth0", "source_port": 5000}, "over IPv6"),
    ],
)
def test_bad_origins_fail_at_the_call(group: str, kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(ValueError, match=re.escape(needle)):
        MulticastEndpoint(group, 5000, **kwargs)  # type: ignore[arg-type]


def test_an_ipv4_source_may_go_with_the_groups_port() -> None:
    """IPv4 takes the source from IP_MULTICAST_IF's address, also on a socket bound to the group."""
    opts = EndpointOptions.build("239.1.1.1", 5000, source_address="10.0.0.1", source_port=5000)
    assert (opts.source_port, opts.origin.address) == ("group", "10.0.0.1")


def test_a_source_address_keeps_the_interfaces_that_hold_it() -> None:
    eth = SNAPSHOT[1:3]
    assert Origin(address="10.0.1.5").narrow(SNAPSHOT, eth, G4, missing_ok=False) == (SNAPSHOT[2],)
    # A link-local address held on two links: both, unless its scope names one.
    assert Origin(address="fe80::1").narrow(SNAPSHOT, eth, G6, missing_ok=False) == eth
    scoped = Origin(address="fe80::1", scope="eth1")
    assert scoped.narrow(SNAPSHOT, eth, G6, missing_ok=False) == (SNAPSHOT[2],)
    assert NO_ORIGIN.narrow(SNAPSHOT, eth, G4, missing_ok=False) == eth


def test_a_source_address_nobody_holds_fails_at_start_and_waits_later() -> None:
    gone = Origin(address="10.9.9.9")
    with pytest.raises(ValueError, match="not an address of this host") as err:
        gone.narrow(SNAPSHOT, SNAPSHOT[1:3], G4, missing_ok=False)
    assert str(err.value) == (
        "source_address 10.9.9.9 is not an address of this host; it has "
        "eth0 10.0.0.1; eth1 10.0.1.1, 10.0.1.5; eth2 10.0.2.1"
    )
    # A running endpoint (the address went away): no interface until it is back.
    assert gone.narrow(SNAPSHOT, SNAPSHOT[1:3], G4, missing_ok=True) == ()


def test_a_source_address_on_an_interface_left_out_is_named() -> None:
    with pytest.raises(ValueError, match=r"10\.0\.1\.5 is on eth1, which the interfaces= selector"):
        Origin(address="10.0.1.5").narrow(SNAPSHOT, SNAPSHOT[1:2], G4, missing_ok=False)
    # Held by a link that is down: no error here; the endpoint explains why nothing is usable.
    assert Origin(address="10.0.2.1").narrow(SNAPSHOT, SNAPSHOT[1:3], G4, missing_ok=False) == ()
