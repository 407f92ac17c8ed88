"""``mcastio relay`` and ``Relay``: the words, the exit codes and the checks before running."""

from __future__ import annotations

import argparse
import json

import pytest

import mcastio
from mcastio._cli import main
from mcastio._cli.relay import directions, parse_targets, stats_json, stats_text


def test_presets_stand_for_both_families_without_repeats() -> None:
    targets = [(str(g), p) for g, p in parse_targets(["mdns", "224.0.0.251:5353", "ssdp"])]
    assert targets == [
        ("224.0.0.251", 5353),
        ("ff02::fb", 5353),
        ("239.255.255.250", 1900),
        ("ff02::c", 1900),
    ]


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["relay", "mdns", "-i", "eth0"], "at least two interface"),
        (["relay", "239.1.2.3", "-i", "a", "-i", "b"], "expected GROUP:PORT"),
        (["relay", "mdns", "-i", "a", "-i", "b", "--from", "a", "--to", "a"], "no direction"),
        (["relay", "mdns", "-i", "a", "-i", "b", "--from", "c"], "not relayed"),
        (["relay", "10.0.0.1:5353", "-i", "a", "-i", "b"], "not a multicast address"),
    ],
)
def test_usage_errors_exit_2_with_the_prefix(
    argv: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("mcastio relay: ")
    assert words in err


def test_options_are_checked_by_argparse_in_any_order(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["relay", "--rate", "0", "mdns", "-i", "a", "-i", "b"])
    assert exc.value.code == 2
    assert "mcastio: argument --rate: must be more than 0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["relay", "mdns"])
    assert exc.value.code == 2


def test_an_interface_missing_on_this_host_is_a_run_failure(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["relay", "--json", "239.255.0.19:4019", "-i", "nosuch0", "-i", "nosuch1"])
    out, err = capsys.readouterr()
    assert code == 1
    assert err.startswith("mcastio: unknown interface name(s) 'nosuch0', 'nosuch1'")
    summary = json.loads(out.splitlines()[-1])["relay"]
    assert [(d["from"], d["to"], d["forwarded"]) for d in summary["directions"]] == [
        ("nosuch0", "nosuch1", 0),
        ("nosuch1", "nosuch0", 0),
    ]


def test_one_way_directions() -> None:
    ns = argparse.Namespace(interface=["a", "b", "c"], from_=["a"], to=None)
    assert directions(ns) == [("a", "b"), ("a", "c")]
    ns = argparse.Namespace(interface=["a", "b", "c"], from_=None, to=["c"])
    assert directions(ns) == [("a", "c"), ("b", "c")]
    ns = argparse.Namespace(interface=["a", "b"], from_=None, to=None)
    assert directions(ns) is None


def test_the_summary_fits_80_columns_and_the_json_has_every_counter(
    capsys: pytest.CaptureFixture[str],
) -> None:
    stats = [
        mcastio.RelayStats("wlp0s20f3.100", "enx00e04c680001", 10**8, 10**6, 1, 2, 3, 4),
        mcastio.RelayStats("b", "a"),
    ]
    text = stats_text(stats, 3600.0)
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "wlp0s20f3." in text
    assert "100000000" in text
    data = stats_json(stats, 1.0)["relay"]
    assert isinstance(data, dict)
    first = data["directions"][0]
    assert first == {
        "from": "wlp0s20f3.100",
        "to": "enx00e04c680001",
        "forwarded": 10**8,
        "answers": 10**6,
        "dropped_rule": 1,
        "dropped_rate": 2,
        "dropped_loop": 3,
        "failed": 4,
    }
    with pytest.raises(SystemExit):
        main(["relay", "--help"])
    help_text = capsys.readouterr().out
    assert max(len(line) for line in help_text.splitlines()) <= 80


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"interfaces": ["a"]}, "at least two"),
        ({"interfaces": "ab"}, "at least two"),
        ({"targets": []}, "at least one group"),
        ({"directions": [("a", "a")]}, "its own link"),
        ({"max_size": 0}, "max_size"),
        ({"slot": 8}, "slot must be"),
        ({"source_rate": 0}, "rate > 0"),
        ({"targets": [("239.1.1.1", 0)]}, "port must be"),
        ({"window": 0}, "duplicate window"),
        ({"max_pending": 0}, "capacity >= 1"),
    ],
)
def test_relay_checks_its_arguments_when_made(kwargs: dict[str, object], words: str) -> None:
    args: dict[str, object] = {"targets": [("239.1.1.1", 5000)], "interfaces": ["a", "b"]}
    args.update(kwargs)
    targets = args.pop("targets")
    interfaces = args.pop("interfaces")
    with pytest.raises(ValueError, match=words):
        mcastio.Relay(targets, interfaces, **args)  # type: ignore[arg-type]
