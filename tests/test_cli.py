"""The mcastio command's parser and output formats, without a network."""

from __future__ import annotations

import base64
import datetime
import json

import pytest

from mcastio._cli import build_parser, main
from mcastio._cli.commands import Tally, datagram_json, datagram_line, parse_group_port, preview
from mcastio._model import Datagram

WHEN = datetime.datetime(2026, 11, 25, 15, 0, 1, 234567, tzinfo=datetime.timezone.utc)


def test_parse_group_port_v4_and_bracketed_v6() -> None:
    group, port = parse_group_port("239.255.0.1:5000")
    assert (str(group), port) == ("239.255.0.1", 5000)
    group, port = parse_group_port("[ff02::fb]:5353")
    assert (str(group), port) == ("ff02::fb", 5353)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("239.255.0.1", "GROUP:PORT"),
        ("ff02::fb:5353", "brackets"),
        ("239.255.0.1:x", "not a number"),
        ("239.255.0.1:70000", "1 to 65535"),
        ("10.0.0.1:5000", "not a multicast"),
    ],
)
def test_parse_group_port_rejects_with_a_reason(text: str, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        parse_group_port(text)


def test_subcommands_and_fixed_flags_exist() -> None:
    parser = build_parser()
    args = parser.parse_args(
        ["listen", "239.1.1.1:5000", "--interface", "eth0", "--interface", "eth1",
         "--json", "--count", "3", "--duration", "1.5"]
    )  # fmt: skip
    assert (args.interface, args.json, args.count, args.duration) == (
        ["eth0", "eth1"],
        True,
        3,
        1.5,
    )
    args = parser.parse_args(
        ["send", "239.1.1.1:5000", "hi", "--interface", "eth1", "--interval", "0.2",
         "--count", "2", "--ttl", "4"]
    )  # fmt: skip
    assert (args.message, args.interval, args.count, args.ttl) == ("hi", 0.2, 2, 4)
    assert parser.parse_args(["interfaces", "--json"]).json is True
    args = parser.parse_args(["doctor", "239.1.1.1", "--duration", "2", "--json"])
    assert (args.group, args.duration, args.json) == ("239.1.1.1", 2.0, True)
    assert parser.parse_args(["demo"]).command == "demo"


def test_bad_target_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["listen", "239.1.1.1"]) == 2
    assert "GROUP:PORT" in capsys.readouterr().err


def test_datagram_line_fits_80_columns_and_shows_every_field() -> None:
    dgram = Datagram(b"hello\x00world" * 20, ("10.200.1.2", 40000), "239.255.0.1", "eth1")
    line = datagram_line(dgram, WHEN)
    assert len(line) <= 80
    for part in ("15:00:01.234", "eth1", "10.200.1.2:40000", "239.255.0.1", " 220 ", "hello.world"):
        assert part in line
    v6 = Datagram(b"x", ("fd00:1::2", 5353, 0, 3), "ff02::fb", "eth1")
    assert "[fd00:1::2]:5353" in datagram_line(v6, WHEN)
    long_v6 = Datagram(b"y" * 100, ("fe80::20dc:19ff:fe91:8c22", 52383, 0, 3), "ff05::1:3", "eth1")
    lines = datagram_line(long_v6, WHEN).splitlines()
    assert len(lines) == 2
    assert all(len(line) <= 80 for line in lines)
    assert lines[1].startswith("    yyy")


def test_datagram_json_keys_and_base64() -> None:
    dgram = Datagram(b"\x00\xffhi", ("10.200.1.2", 40000), "239.255.0.1", "eth1")
    obj = json.loads(datagram_json(dgram, WHEN))
    assert set(obj) == {"time", "interface", "source", "group", "length", "data"}
    assert base64.b64decode(obj["data"]) == b"\x00\xffhi"
    assert obj["length"] == 4
    assert obj["source"] == "10.200.1.2:40000"
    assert datetime.datetime.fromisoformat(obj["time"]) == WHEN


def test_preview_replaces_unprintables_and_marks_cuts() -> None:
    assert preview(b"a\x01b", 10) == "a.b"
    assert preview(b"abcdefghijk", 5) == "abcd~"


def test_tally_summary_lists_joined_interfaces_even_when_silent() -> None:
    tally = Tally(interfaces=["eth0", "eth1"])
    tally.add(Datagram(b"abc", ("10.0.0.2", 1), "239.1.1.1", "eth1"))
    tally.add(Datagram(b"de", ("10.0.0.3", 1), "239.1.1.1", "eth1"))
    lines = tally.summary("239.1.1.1", 5000).splitlines()
    assert lines[0] == "summary for 239.1.1.1:5000:"
    assert lines[1].split()[:2] == ["eth0", "0"]
    assert lines[2].split()[:5] == ["eth1", "2", "datagrams", "5", "bytes"]
    assert "2 sources" in lines[2]
    assert all(len(line) <= 80 for line in lines)
