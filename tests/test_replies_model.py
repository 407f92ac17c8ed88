"""Pure pieces of request/reply: the port mode, the reply marker, the scope rule."""

from __future__ import annotations

import datetime

import pytest

from mcastio import Datagram
from mcastio._cli.fmt import datagram_json, datagram_line
from mcastio._model import parse_group
from mcastio._net import bind_needs_scope
from mcastio._options import validate_source_port


def test_source_port_takes_two_modes_and_names_them_when_wrong() -> None:
    assert validate_source_port("ephemeral") == "ephemeral"
    assert validate_source_port("group") == "group"
    for bad in ("Group", "5353", ""):
        with pytest.raises(ValueError, match=r"'ephemeral'.*'group'"):
            validate_source_port(bad)


def test_a_reply_is_a_datagram_without_a_group() -> None:
    reply = Datagram(b"answer", ("10.0.0.2", 1900), None, "eth1")
    group = Datagram(b"notify", ("10.0.0.2", 1900), "239.255.255.250", "eth1")
    assert reply.is_reply
    assert not group.is_reply


@pytest.mark.parametrize(
    ("group", "needs"),
    [
        ("224.0.0.251", False),
        ("239.255.255.250", False),
        ("ff02::fb", True),
        ("ff12::1:3", True),  # transient, link scope
        ("ff05::c", False),
        ("ff0e::1", False),
        ("ff3e::8000:1", False),
    ],
)
def test_only_link_scope_ipv6_binds_need_a_scope_id(group: str, needs: bool) -> None:
    assert bind_needs_scope(parse_group(group)) is needs


def test_the_listen_output_shows_a_reply() -> None:
    reply = Datagram(b"answer", ("10.0.0.2", 1900), None, "eth1")
    when = datetime.datetime(2026, 1, 1, 12, 0, 0)
    assert " reply " in datagram_line(reply, when)
    assert '"group": null' in datagram_json(reply, when)
