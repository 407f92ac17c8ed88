"""EndpointOptions: every option checked in one pure place, before any socket exists."""

from __future__ import annotations

import dataclasses

import pytest

from mcastio._options import DEFAULT_KEEPALIVE, EndpointOptions


def test_build_returns_the_checked_canonical_values() -> None:
    opts = EndpointOptions.build(
        "232.1.2.3",
        5000,
        interfaces=["eth1", "eth2"],
        sources=["10.0.0.2", " 10.0.0.2", "10.0.0.3"],
        keepalive=True,
        coalesce_delay=0,
        source_port="group",
    )
    assert str(opts.group) == "232.1.2.3"
    assert opts.selector == ("eth1", "eth2")
    assert opts.sources == ("10.0.0.2", "10.0.0.3")
    assert opts.keepalive == DEFAULT_KEEPALIVE
    assert opts.coalesce_delay == 0.0
    assert isinstance(opts.coalesce_delay, float)
    assert opts.source_port == "group"
    assert EndpointOptions.build("239.1.1.1", 5000, keepalive=False).keepalive is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "error", "needle"),
    [
        ({"loopback": "no"}, TypeError, "loopback must be True or False"),
        ({"receive_ttl": 1}, TypeError, "receive_ttl must be True or False"),
        ({"replies": "off"}, TypeError, "replies must be True or False"),
        ({"on_interface_event": 3}, TypeError, "on_interface_event must be a callable"),
        ({"keepalive": -1}, ValueError, "keepalive must be True"),
        ({"coalesce_delay": 2}, ValueError, "coalesce_delay must be"),
        ({"source_port": "5353"}, ValueError, "source_port must be"),
        ({"queue_size": 0}, ValueError, "queue_size must be"),
    ],
)
def test_build_names_the_first_bad_option(
    kwargs: dict[str, object], error: type[Exception], needle: str
) -> None:
    with pytest.raises(error, match=needle):
        EndpointOptions.build("239.1.1.1", 5000, **kwargs)  # type: ignore[arg-type]
