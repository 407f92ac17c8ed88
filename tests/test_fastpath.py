"""The faster constructors build the very same frozen values."""

from __future__ import annotations

import dataclasses

import pytest

from mcastio import Datagram, SendResult
from mcastio._fastpath import OkResults, new_datagram
from mcastio._options import validate_max_batch, validate_receive_buffer


def test_new_datagram_equals_the_dataclass_constructor() -> None:
    made = new_datagram(b"abc", ("10.0.0.2", 4000), "239.1.2.3", "eth1")
    assert made == Datagram(b"abc", ("10.0.0.2", 4000), "239.1.2.3", "eth1")
    assert type(made) is Datagram
    assert hash(made) == hash(Datagram(b"abc", ("10.0.0.2", 4000), "239.1.2.3", "eth1"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.data = b"other"  # type: ignore[misc]
    assert not hasattr(made, "__dict__")


def test_ok_results_are_equal_values_and_bounded() -> None:
    cache = OkResults("eth0")
    first = cache[10]
    assert first == SendResult("eth0", None, 10)
    assert first.ok
    assert cache[10] is first
    assert cache[11] == SendResult("eth0", None, 11)
    for size in range(2 * OkResults.LIMIT):
        assert cache[size] == SendResult("eth0", None, size)
    assert len(cache) == OkResults.LIMIT


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "1"])
def test_receive_buffer_validation(bad: object) -> None:
    with pytest.raises(ValueError, match="receive_buffer"):
        validate_receive_buffer(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [0, -3, False, 2.0])
def test_max_batch_validation(bad: object) -> None:
    with pytest.raises(ValueError, match="max_batch"):
        validate_max_batch(bad)  # type: ignore[arg-type]
    assert validate_max_batch(None) is None
    assert validate_max_batch(7) == 7


def test_receive_buffer_accepts_none_and_sizes() -> None:
    assert validate_receive_buffer(None) is None
    assert validate_receive_buffer(1 << 20) == 1 << 20
