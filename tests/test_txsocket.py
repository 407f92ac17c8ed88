"""SendOptions is the whole sharing key: every option a transmit socket is built with."""

from __future__ import annotations

import dataclasses
import inspect
import sys

import pytest

from mcastio import MulticastError, _txnet
from mcastio._options import EndpointOptions
from mcastio._platform import PORTABLE_ENV
from mcastio._txsocket import SendOptions


def test_every_socket_option_is_a_field_of_the_key() -> None:
    # open_sender(group, iface, <options>): each option must be a SendOptions field,
    # so no new option reaches the socket without becoming part of the sharing key.
    params = list(inspect.signature(_txnet.open_sender).parameters)[2:]
    fields = [f.name for f in dataclasses.fields(SendOptions) if f.name != "family"]
    assert sorted(params) == sorted(fields)


def test_only_sockets_that_read_nothing_are_shareable() -> None:
    group_mode = SendOptions.of(EndpointOptions.build("239.1.2.3", 5000, source_port="group"))
    ephemeral = SendOptions.of(EndpointOptions.build("239.1.2.3", 5000))
    assert group_mode.shareable
    assert group_mode.group_port == 5000
    assert not ephemeral.shareable
    assert ephemeral.group_port is None
    # Equal options, equal keys: two endpoints with different groups share.
    other = SendOptions.of(EndpointOptions.build("239.9.9.9", 5000, source_port="group"))
    assert other == group_mode
    assert (
        SendOptions.of(EndpointOptions.build("239.9.9.9", 5000, source_port="group", ttl=2))
        != group_mode
    )


def test_the_origin_is_part_of_the_key() -> None:
    # Two group-mode endpoints marking their traffic differently must not share a
    # socket: the TOS byte is the socket's, so one would send with the other's.
    plain = SendOptions.of(EndpointOptions.build("239.1.2.3", 5000, source_port="group"))
    marked = SendOptions.of(EndpointOptions.build("239.1.2.3", 5000, source_port="group", tos=184))
    assert marked.origin.tos == 184
    assert marked != plain
    assert marked == SendOptions.of(
        EndpointOptions.build("239.9.9.9", 5000, source_port="group", tos=184)
    )
    # A fixed port of its own reads replies: private, never shared.
    fixed = SendOptions.of(EndpointOptions.build("239.1.2.3", 5000, source_port=40000))
    assert fixed.origin.port == 40000
    assert not fixed.shareable


def test_the_portable_profile_sends_from_a_socket_per_interface(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    own = SendOptions.of(EndpointOptions.build("239.1.2.3", 5000))
    assert (own.portable, own.pinned, own.per_interface, own.shareable) == (
        True,
        False,
        True,
        False,
    )
    # Group mode reads nothing: still shared in the loop, a socket per interface.
    group = SendOptions.of(EndpointOptions.build("239.1.2.3", 5000, source_port="group"))
    assert (group.portable, group.pinned, group.per_interface, group.shareable) == (
        True,
        False,
        False,
        True,
    )
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.delenv(PORTABLE_ENV, raising=False)
    linux = SendOptions.of(EndpointOptions.build("239.1.2.3", 5000))
    assert (linux.portable, linux.pinned, linux.per_interface) == (False, True, False)


def test_group_mode_is_refused_on_windows_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "win32")
    with pytest.raises(MulticastError, match="not available on Windows"):
        SendOptions.of(EndpointOptions.build("239.1.2.3", 5000, source_port="group"))
    assert SendOptions.of(EndpointOptions.build("239.1.2.3", 5000)).per_interface
