"""The platform seam: which profile runs where, and the other OSes' layouts.

Pure: :func:`choose` is given the platform and environment; the per-OS modules'
structures are packed and read back by offset.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
import struct
from types import ModuleType

import pytest

import mcastio
from mcastio import _drain
from mcastio._platform import (
    PORTABLE_ENV,
    Capabilities,
    capabilities,
    choose,
    darwin,
    describe,
    freebsd,
    platform_name,
    unavailable,
    windows,
)

pytestmark = pytest.mark.one_path


def pick(raw: str, env: dict[str, str] | None = None) -> Capabilities:
    """The profile for ``raw`` on a Linux host with every drain and a limit of 20."""
    return choose(raw, env or {}, compiled=True, batched=True, memberships=20)


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        ("linux", "linux"),
        ("darwin", "darwin"),
        ("freebsd13", "freebsd"),
        ("freebsd14", "freebsd"),
        ("win32", "windows"),
        ("openbsd7", "openbsd7"),
    ],
)
def test_platform_names(raw: str, name: str) -> None:
    assert platform_name(raw) == name


def test_linux_runs_the_linux_profile() -> None:
    caps = pick("linux")
    assert caps.profile == "linux"
    assert caps.watch == "netlink"
    assert (caps.keeper, caps.querier, caps.procfs) == (True, True, True)
    assert (caps.datagram_interface, caps.datagram_ttl, caps.datagram_group) == (True, True, True)
    assert (caps.batched_receive, caps.compiled_drain) == (True, True)
    assert (caps.pinned_send, caps.batched_send) == (True, True)
    assert caps.multicast_all_needed
    assert caps.memberships_per_socket == 20


def test_linux_reports_what_the_host_offers() -> None:
    caps = choose("linux", {}, compiled=False, batched=False, memberships=7)
    assert (caps.compiled_drain, caps.batched_receive, caps.memberships_per_socket) == (
        False,
        False,
        7,
    )
    # The pktinfo on sendmsg is the kernel's; the batched sends are the extension's.
    assert (caps.pinned_send, caps.batched_send) == (True, False)


@pytest.mark.parametrize("value", ["1", "yes"])
def test_portable_env_forces_the_portable_profile_on_linux(value: str) -> None:
    caps = pick("linux", {PORTABLE_ENV: value})
    assert caps.profile == "portable"
    assert caps.why == f"{PORTABLE_ENV}=1"
    assert caps.watch == "poll"
    assert (caps.keeper, caps.querier) == (False, False)
    assert (caps.compiled_drain, caps.batched_receive) == (False, False)
    # The receive socket holds one group, so it names the datagram's group.
    assert (caps.datagram_interface, caps.datagram_ttl, caps.datagram_group) == (False, False, True)
    # A socket per interface, one sendto per copy.
    assert (caps.pinned_send, caps.batched_send) == (False, False)
    # Still the Linux kernel: its rules and its /proc stay.
    assert (caps.multicast_all_needed, caps.procfs) == (True, True)
    assert caps.memberships_per_socket == 20


@pytest.mark.parametrize("value", ["", "0"])
def test_portable_env_off(value: str) -> None:
    assert pick("linux", {PORTABLE_ENV: value}).profile == "linux"


@pytest.mark.parametrize(
    ("raw", "memberships"),
    [("darwin", 4095), ("freebsd14", 4095), ("win32", None), ("openbsd7", None)],
)
def test_other_platforms_run_the_portable_profile(raw: str, memberships: int | None) -> None:
    # What the Linux host offers never leaks into another platform's profile.
    caps = pick(raw)
    assert caps.profile == "portable"
    assert caps.why == "not Linux"
    assert caps.watch == "poll"
    assert (caps.keeper, caps.querier, caps.procfs) == (False, False, False)
    assert not caps.multicast_all_needed
    assert (caps.compiled_drain, caps.batched_receive) == (False, False)
    assert (caps.pinned_send, caps.batched_send) == (False, False)
    assert caps.memberships_per_socket == memberships
    # Unix: a receive socket per (interface, group). Windows: per interface, every group.
    assert caps.datagram_group == (raw != "win32")


def test_capabilities_here_match_the_drain_in_use() -> None:
    caps = mcastio.capabilities()
    assert isinstance(caps, Capabilities)
    assert caps.platform == "linux"
    assert caps.compiled_drain == (_drain.COMPILED and caps.profile == "linux")
    with open("/proc/sys/net/ipv4/igmp_max_memberships", encoding="ascii") as f:
        assert caps.memberships_per_socket == int(f.read())


def test_capabilities_follow_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PORTABLE_ENV, "1")
    assert capabilities().profile == "portable"
    monkeypatch.delenv(PORTABLE_ENV)
    assert capabilities().profile == "linux"


def test_capabilities_are_a_frozen_value() -> None:
    caps = pick("darwin")
    with pytest.raises(dataclasses.FrozenInstanceError):
        caps.keeper = True  # type: ignore[misc]


@pytest.mark.parametrize(
    ("raw", "env", "words"),
    [
        ("darwin", {}, "not available on macOS"),
        ("freebsd14", {}, "not available on FreeBSD"),
        ("win32", {}, "not available on Windows"),
        ("linux", {PORTABLE_ENV: "1"}, f"off in the portable profile ({PORTABLE_ENV}=1)"),
    ],
)
def test_unavailable_names_the_platform(raw: str, env: dict[str, str], words: str) -> None:
    err = unavailable("the querier", pick(raw, env))
    assert isinstance(err, mcastio.MulticastError)
    assert str(err).startswith("the querier is ")
    assert words in str(err)


@pytest.mark.parametrize("raw", ["linux", "darwin", "freebsd14", "win32"])
@pytest.mark.parametrize("env", [{}, {PORTABLE_ENV: "1"}])
def test_doctor_line_says_what_is_missing(raw: str, env: dict[str, str]) -> None:
    caps = pick(raw, env)
    line = describe(caps)
    assert ("no keeper" in line) == (not caps.keeper)
    assert ("polled watch" in line) == (caps.watch == "poll")
    assert ("recvmmsg" in line) == caps.batched_receive
    assert ("interface and group from the receiving socket" in line) == (
        caps.profile == "portable" and caps.datagram_group
    )
    assert ("no group" in line) == (not caps.datagram_group)
    assert ("a transmit socket per interface" in line) == (not caps.pinned_send)


# -- the other OSes' structures ----------------------------------------------------------


def _family_at(raw: bytes, length_byte: bool) -> int:
    return raw[1] if length_byte else struct.unpack_from("=H", raw)[0]


@pytest.mark.parametrize(
    ("module", "offset", "length_byte", "af_inet6"),
    [
        # xnu bsd/netinet/in.h: #pragma pack(4) around group_req.
        (darwin, 4, True, 30),
        # FreeBSD: sockaddr_storage aligned as an int64 (64-bit builds here).
        (freebsd, 8, True, 28),
        # Windows: SOCKADDR_STORAGE holds an __int64.
        (windows, 8, False, 23),
    ],
)
def test_group_req_layouts(
    module: ModuleType, offset: int, length_byte: bool, af_inet6: int
) -> None:
    layout = module.GROUP
    pack = module.group_sockaddr
    assert af_inet6 == module.AF_INET6
    assert layout.group_req.size == offset + 128
    assert layout.group_source_req.size == offset + 256

    v4 = pack(ipaddress.IPv4Address("239.1.2.3"))
    req = layout.pack_group(7, v4)
    assert struct.unpack_from("=I", req)[0] == 7
    group = req[offset : offset + 128]
    assert _family_at(group, length_byte) == 2
    if length_byte:
        assert group[0] == 16  # sin_len: sizeof(struct sockaddr_in)
    assert group[4:8] == socket.inet_aton("239.1.2.3")
    assert group[16:] == bytes(112)  # the rest of the storage is zero

    v6 = pack(ipaddress.IPv6Address("ff02::fb"), scope=3)
    src = pack(ipaddress.IPv6Address("fe80::1"), scope=3)
    req = layout.pack_source(3, v6, src)
    group, source = req[offset : offset + 128], req[offset + 128 :]
    assert _family_at(group, length_byte) == af_inet6
    if length_byte:
        assert group[0] == 28  # sin6_len: sizeof(struct sockaddr_in6)
    assert group[8:24] == ipaddress.IPv6Address("ff02::fb").packed
    assert struct.unpack_from("=I", group, 24)[0] == 3  # sin6_scope_id
    assert source[8:24] == ipaddress.IPv6Address("fe80::1").packed


def test_cmsg_space_is_the_socket_modules_where_it_exists(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import socket

    from mcastio._platform.cmsg import cmsg_space

    assert [cmsg_space(n) for n in (0, 4, 20, 64)] == [socket.CMSG_SPACE(n) for n in (0, 4, 20, 64)]
    # Windows' CPython has no CMSG_SPACE (and no recvmsg): no room, not a crash.
    monkeypatch.delattr(socket, "CMSG_SPACE")
    assert cmsg_space(64) == 0


def test_off_linux_nothing_batches() -> None:
    from mcastio._platform import _nobatch

    assert _nobatch.available() is False
