"""Off Linux, a transmit socket that reads replies goes on without Linux's socket filter."""

from __future__ import annotations

import errno
import socket
import sys

import pytest

from mcastio import _recvmsg, _replynet
from mcastio._model import parse_group
from mcastio._platform.linux import SO_RXQ_OVFL
from mcastio._receive import ReceivePath
from mcastio._replies import Replies


@pytest.mark.parametrize("platform", ["darwin", "freebsd14", "win32"])
def test_no_socket_filter_off_linux_is_an_oserror_the_callers_report(
    platform: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sys, "platform", platform)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        with pytest.raises(OSError, match="socket filters") as caught:
            _replynet.refuse_replies(sock)
        assert caught.value.errno == errno.ENOPROTOOPT
        # Replies are still read there, with the kernel's defaults, and it is said once.
        replies = Replies(ReceivePath(parse_group("239.1.2.3"), 5000))
        replies.prepare(sock)
    assert "keeps the kernel's reply defaults" in caplog.text


@pytest.mark.parametrize("platform", ["darwin", "freebsd14", "win32"])
def test_off_linux_no_linux_drop_options_are_used(
    platform: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Linux's SO_RXQ_OVFL (40) and SO_MEMINFO (55) are other options, or none, there.
    monkeypatch.setattr(sys, "platform", platform)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        with pytest.raises(OSError, match="socket filters"):
            _replynet.prepare_reply_socket(sock)
        # Read on this Linux kernel: the stamp was never asked for.
        assert sock.getsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL) == 0
        assert _recvmsg.socket_drops(sock) is None


def test_on_linux_the_reply_socket_stamps_and_counts_drops() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        _replynet.prepare_reply_socket(sock)
        assert sock.getsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL) == 1
        assert _recvmsg.socket_drops(sock) == 0
