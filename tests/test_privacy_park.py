"""On macOS, Local Network Privacy's EHOSTUNREACH is hinted once and parks no link. No network."""

from __future__ import annotations

import logging
import socket
import sys

import pytest

from mcastio import _poolrefusals, _transmit
from mcastio._model import Interface
from mcastio._options import EndpointOptions
from mcastio._poolsends import Sender
from mcastio._txsocket import SendOptions, TxSocket

DARWIN_EHOSTUNREACH = 65  # xnu bsd/sys/errno.h
DEST = ("239.1.2.3", 5000)


def pool_with_one_sender(sock: socket.socket) -> tuple[_transmit.TransmitPool, Sender]:
    options = EndpointOptions.build(*DEST)
    pool = _transmit.TransmitPool(options.group, 5000, SendOptions.of(options))
    sender = Sender(Interface("en0", 4), TxSocket(sock))
    pool._senders[4] = sender
    return pool, sender


@pytest.mark.parametrize(
    ("platform", "release", "errno", "parked"),
    [
        ("darwin", "15.1", DARWIN_EHOSTUNREACH, False),
        ("darwin", "", DARWIN_EHOSTUNREACH, False),  # release unknown: assume 15+
        ("darwin", "14.6", DARWIN_EHOSTUNREACH, True),  # before 15 the errno means it
        ("linux", "", 113, True),  # Linux's EHOSTUNREACH: a refusing link
    ],
)
def test_refusals_park_unless_local_network_privacy(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    platform: str,
    release: str,
    errno: int,
    parked: bool,
) -> None:
    monkeypatch.setattr(sys, "platform", platform)
    monkeypatch.setattr(_poolrefusals, "_mac_release", lambda: release)
    monkeypatch.setattr(_poolrefusals._Said, "privacy_hint", False)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock, caplog.at_level(logging.WARNING):
        pool, sender = pool_with_one_sender(sock)
        for _ in range(2):
            pool._to_park.append((sender, OSError(errno, "No route to host")))
            pool._park(DEST)
        assert (4 in pool._parked) is parked
        assert (4 in pool._senders) is not parked
    hints = [r for r in caplog.records if "Local Network" in r.getMessage()]
    assert len(hints) == (0 if parked else 1)  # said once, not per failure
