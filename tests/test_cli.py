"""The mcastio command's parser, validation and output formats, without a network."""

from __future__ import annotations

import argparse
import base64
import datetime
import io
import json
import logging
from pathlib import Path

import pytest

import mcastio
from mcastio._cli import COMMAND_MODULES, build_parser, main
from mcastio._cli.fmt import (
    LISTEN_HEADER,
    datagram_json,
    datagram_line,
    hexdump,
    host_port,
    parse_group_port,
    plural,
    preview,
)
from mcastio._cli.logs import cli_words, setup_logging
from mcastio._cli.send import SendTally, load_payload, result_line
from mcastio._cli.seqheader import HEADER_SIZE, encode_header
from mcastio._model import Datagram, SendResult

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


def test_ipv6_addresses_print_in_brackets() -> None:
    assert host_port("ff02::fb", 5353) == "[ff02::fb]:5353"
    assert host_port("239.1.1.1", 5000) == "239.1.1.1:5000"


def test_subcommands_and_flags_exist() -> None:
    parser = build_parser()
    args = parser.parse_args(
        ["listen", "239.1.1.1:5000", "[ff12::1]:5000", "--interface", "eth0", "--json",
         "--count", "3", "--duration", "1.5", "--source", "10.0.0.2", "--fail-empty"]
    )  # fmt: skip
    assert args.targets == ["239.1.1.1:5000", "[ff12::1]:5000"]
    assert (args.interface, args.json, args.count, args.duration) == (["eth0"], True, 3, 1.5)
    assert (args.source, args.fail_empty) == (["10.0.0.2"], True)
    assert parser.parse_args(["listen", "239.1.1.1:1", "--progress", "2"]).progress == 2.0
    assert parser.parse_args(["listen", "239.1.1.1:1", "-q"]).quiet is True
    assert parser.parse_args(["listen", "239.1.1.1:1", "--hex"]).hex is True
    args = parser.parse_args(
        ["send", "239.1.1.1:5000", "hi", "--interface", "eth1", "--rate", "50",
         "--count", "2", "--ttl", "4", "--seq", "--json"]
    )  # fmt: skip
    assert (args.message, args.rate, args.count, args.ttl, args.seq) == ("hi", 50.0, 2, 4, True)
    args = parser.parse_args(["ping", "239.1.1.1:5000", "10.0.0.2", "10.0.1.2", "-c", "3"])
    assert (args.peers, args.count) == (["10.0.0.2", "10.0.1.2"], 3)
    assert parser.parse_args(["interfaces", "--json"]).json is True
    args = parser.parse_args(["doctor", "239.1.1.1", "--duration", "2", "--json"])
    assert (args.group, args.duration, args.json) == ("239.1.1.1", 2.0, True)
    assert parser.parse_args(["demo"]).command == "demo"
    args = parser.parse_args(["querier", "-i", "eth1", "--interval", "2", "-d", "5", "-4"])
    assert (args.interface, args.interval, args.duration, args.ipv6) == (["eth1"], 2.0, 5.0, False)


def test_subcommand_registration_is_one_list() -> None:
    # A new subcommand is a module with register(), named here ('querier' came that way).
    assert COMMAND_MODULES == ["demo", "listen", "send", "ping", "commands", "querier", "relay"]
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == {
        "demo",
        "listen",
        "send",
        "ping",
        "interfaces",
        "doctor",
        "querier",
        "relay",
    }


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"mcastio {mcastio.__version__}"


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["listen", "239.1.1.1:5000", "-c", "0"], "--count/-c: must be at least 1, not 0"),
        (["listen", "239.1.1.1:5000", "-d", "-1"], "--duration/-d: must be more than 0"),
        (["listen", "239.1.1.1:5000", "-d", "nan"], "not a finite number"),
        (["listen", "239.1.1.1:5000", "-q", "--hex"], "not allowed with argument"),
        (["send", "239.1.1.1:5000", "x", "--interval", "-1"], "--interval: must be more than 0"),
        (["send", "239.1.1.1:5000", "x", "--rate", "0"], "more than 0 packets per second"),
        (["send", "239.1.1.1:5000", "x", "-c", "x"], "'x' is not a whole number"),
        (["send", "239.1.1.1:5000", "x", "--ttl", "256"], "from 0 to 255, not 256"),
        (["send", "239.1.1.1:5000", "--hex", "4g"], "is not hex bytes"),
        (["send", "239.1.1.1:5000", "--size", "70000"], "from 0 to 65507 bytes"),
        (["send", "239.1.1.1:5000", "x", "--rate", "3", "--interval", "1"], "not allowed"),
        (["send", "239.1.1.1:5000", "x", "--dscp", "64"], "--dscp: must be from 0 to 63"),
        (["send", "239.1.1.1:5000", "x", "--dscp", "AF44"], "'AF44' is not a DSCP"),
        (["send", "239.1.1.1:5000", "x", "--tos", "0x100"], "--tos: must be from 0 to 255"),
        (["send", "239.1.1.1:5000", "x", "--tos", "8", "--dscp", "EF"], "not allowed with"),
        (["send", "239.1.1.1:5000", "x", "--source-port", "0"], "a port from 1 to 65535"),
        (["send", "239.1.1.1:5000", "x", "--source-port", "65536"], "a port from 1 to 65535"),
        (["ping", "239.1.1.1:5000", "-c", "0"], "must be at least 1"),
        (["doctor", "--duration", "-1"], "must be more than 0"),
        (["doctor", "-d", "0"], "must be more than 0"),
        (["querier", "--interval", "0"], "--interval: must be more than 0"),
        (["querier", "--duration", "0"], "--duration/-d: must be more than 0"),
    ],
)
def test_bad_values_are_usage_errors_with_a_reason(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert needle in " ".join(err.split()), err  # messages wrap at 80 columns
    assert all(len(line) <= 80 for line in err.splitlines()), err
    # One prefix for every subcommand; the usage line names the subcommand.
    assert [ln for ln in err.splitlines() if not ln.startswith(" ")][-1].startswith("mcastio: ")
    assert f"usage: mcastio {argv[0]} " in err


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["listen", "239.1.1.1"], "GROUP:PORT"),
        (["send", "239.1.1.1:5000"], "give a MESSAGE, or --file PATH"),
        (["send", "239.1.1.1:5000", "--file", "/nonexistent/x"], "cannot read /nonexistent/x"),
        (["ping", "239.1.1.1:5000", "fd00::1"], "not of the group's address family"),
        (["ping", "239.1.1.1:5000", "host"], "is not an IP address"),
        (["ping", "239.1.1.1:5000", "239.1.1.2"], "is a multicast address"),
        (["send", "239.1.1.1:5000", "x", "--size", "3"], "give the payload once"),
        (["doctor", "239.255.1.1:70000"], "port must be from 1 to 65535"),
        (["listen", "[ff02::1%eth0]:5000"], "--interface eth0"),
        (["send", "239.1.1.1:5000", "x", "--source", "239.1.1.2"], "--source 239.1.1.2 must be"),
        (["send", "239.1.1.1:5000", "x", "--source", "fd00::1"], "--source fd00::1 is IPv6"),
        (["send", "239.1.1.1:5000", "x", "--source", "host"], "--source 'host' is not an IP"),
        (
            ["send", "[ff02::1]:5000", "x", "--source", "fe80::1%eth0", "--source-port", "5000"],
            "--source fe80::1 cannot be combined with sending",
        ),
    ],
)
def test_bad_targets_and_payloads_exit_2_before_touching_the_network(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err
    assert err.startswith("mcastio: "), err
    assert "interfaces=" not in err  # command-line words, not the API's


def test_datagram_line_fits_80_columns_and_shows_every_field() -> None:
    dgram = Datagram(b"hello\x00world" * 20, ("10.200.1.2", 40000), "239.255.0.1", "eth1", 7)
    line = datagram_line(dgram, WHEN, ttl=7)
    assert len(line) <= 80
    assert len(LISTEN_HEADER) <= 80
    fields = line.split()
    assert fields[:6] == ["15:00:01.234", "eth1", "10.200.1.2:40000", "239.255.0.1", "7", "220"]
    assert fields[6] == "hello.worldhe~"
    # Each label sits over its column.
    for label, value in (("TTL", "7"), ("LEN", "220"), ("GROUP", "239.255.0.1")):
        assert LISTEN_HEADER.index(label) + len(label) >= line.index(" " + value + " ")
    assert datagram_line(dgram, WHEN).split()[4] == "-"
    v6 = Datagram(b"x", ("fd00:1::2", 5353, 0, 3), "ff02::fb", "eth1")
    assert "[fd00:1::2]:5353" in datagram_line(v6, WHEN)
    long_v6 = Datagram(b"y" * 100, ("fe80::20dc:19ff:fe91:8c22", 52383, 0, 3), "ff05::1:3", "eth1")
    lines = datagram_line(long_v6, WHEN, 1).splitlines()
    assert len(lines) == 2
    assert all(len(line) <= 80 for line in lines)
    assert lines[1].startswith("    yyy")


def test_datagram_line_shows_the_sequence_number_not_the_header_bytes() -> None:
    data = encode_header(7, 42, 0) + b"payload"
    line = datagram_line(Datagram(data, ("10.0.0.2", 1), "239.1.1.1", "eth0"), WHEN, 1, 42)
    assert line.endswith(" #42 payload")
    assert str(len(data)) in line.split()


def test_datagram_json_keys_and_base64() -> None:
    dgram = Datagram(b"\x00\xffhi", ("10.200.1.2", 40000), "239.255.0.1", "eth1", 3)
    obj = json.loads(datagram_json(dgram, WHEN, 3))
    assert set(obj) == {"time", "interface", "source", "group", "port", "length", "data", "ttl"}
    assert base64.b64decode(obj["data"]) == b"\x00\xffhi"
    assert (obj["length"], obj["ttl"], obj["source"]) == (4, 3, "10.200.1.2:40000")
    assert datetime.datetime.fromisoformat(obj["time"]) == WHEN
    assert json.loads(datagram_json(dgram, WHEN, 3, seq=9))["seq"] == 9


def test_preview_and_hexdump() -> None:
    assert preview(b"a\x01b", 10) == "a.b"
    assert preview(b"abcdefghijk", 5) == "abcd~"
    lines = hexdump(bytes(range(65, 65 + 20)))
    assert lines[0] == "    0000  41 42 43 44 45 46 47 48 49 4a 4b 4c 4d 4e 4f 50  ABCDEFGHIJKLMNOP"
    assert lines[1].startswith("    0010  51 52 53 54")
    assert lines[1].endswith("  QRST")
    assert all(len(line) <= 80 for line in lines)


def test_one_byte_is_singular() -> None:
    assert plural(1, "byte") == "1 byte"
    assert plural(0, "byte") == "0 bytes"
    assert result_line(1, SendResult("eth0", sent=1)).split()[1:] == ["eth0", "sent", "1", "byte"]
    assert result_line(2, SendResult("eth0", sent=5)).endswith("sent 5 bytes")
    failed = result_line(1, SendResult("eth2", OSError(101, "Network is unreachable")))
    assert failed.split()[1:] == ["eth2", "FAILED:", "Network", "is", "unreachable"]


def test_send_tally_summary() -> None:
    tally = SendTally()
    tally.rounds = 2
    for result in (SendResult("eth0", sent=3), SendResult("eth1", OSError("x"))) * 2:
        tally.add(result)
    text = tally.summary("[ff02::1]:5000")
    assert text.splitlines()[0] == (
        "sent 2 datagrams (6 bytes) to [ff02::1]:5000 in 2 rounds, 2 failed"
    )
    assert tally.to_json()["interfaces"] == {
        "eth0": {"sent": 2, "failed": 0},
        "eth1": {"sent": 0, "failed": 2},
    }


def _payload_args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["send", "239.1.1.1:5000", *argv])


def test_payload_from_message_file_stdin_hex_and_size(tmp_path: Path) -> None:
    assert load_payload(_payload_args("héllo")) == "héllo".encode()
    path = tmp_path / "payload.bin"
    path.write_bytes(b"\x00\x01file")
    assert load_payload(_payload_args("--file", str(path))) == b"\x00\x01file"
    assert load_payload(_payload_args("--file", "-"), io.BytesIO(b"from stdin")) == b"from stdin"
    assert load_payload(_payload_args("--hex", "48 65:6c")) == b"Hel"
    assert load_payload(_payload_args("--hex", "0x48656c6c6f")) == b"Hello"
    assert load_payload(_payload_args("--size", "30")) == bytes(97 + i % 26 for i in range(30))
    assert load_payload(_payload_args("--size", "0")) == b""


def test_seq_header_plus_payload_must_fit_a_datagram(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["send", "239.1.1.1:5000", "--size", "65507", "--seq"]) == 2
    assert f"--seq adds {HEADER_SIZE} bytes" in capsys.readouterr().err


def test_logs_use_command_line_words_and_drop_what_the_cli_does_not_do() -> None:
    text = (
        "no interface can carry 239.1.1.1:\n  eth0: excluded by the interfaces= selector\n"
        "  (an interfaces= selector was given)\nwaiting for an interface to become usable"
    )
    assert cli_words(text) == (
        "no interface can carry 239.1.1.1:\n  eth0: not named with --interface\n"
        "  (--interface was given)"
    )


def test_logs_are_formatted_for_people() -> None:
    stream = io.StringIO()
    handler = setup_logging(stream=stream)
    try:
        log = logging.getLogger("mcastio")
        log.warning("could not use %s\n  because: %s", "eth1", "the interfaces= selector")
        log.info("joined (hidden unless --verbose)")
    finally:
        logging.getLogger("mcastio").removeHandler(handler)
    assert stream.getvalue() == (
        "mcastio: warning: could not use eth1\n  because: the --interface\n"
    )


# -- the second pass (issue 20) ---------------------------------------------------------


def test_options_and_operands_in_any_order() -> None:
    """Friction 3: the message after options was refused with the top-level usage."""
    args = build_parser().parse_args(
        ["send", "239.255.1.1:5001", "--seq", "-c", "20", "--rate", "10", "-q", "ping"]
    )
    assert (args.target, args.message, args.count, args.rate, args.seq, args.quiet) == (
        "239.255.1.1:5001", "ping", 20, 10.0, True, True,
    )  # fmt: skip
    args = build_parser().parse_args(["ping", "-c", "3", "239.1.1.1:5000", "-i", "e", "10.0.0.2"])
    assert (args.target, args.peers, args.interface) == ("239.1.1.1:5000", ["10.0.0.2"], ["e"])
    args = build_parser().parse_args(["listen", "-q", "239.1.1.1:5000", "-c", "2", "[ff02::1]:9"])
    assert args.targets == ["239.1.1.1:5000", "[ff02::1]:9"]


def test_a_leftover_argument_is_refused_with_the_subcommands_usage(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["send", "239.255.1.1:5001", "one", "two"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: mcastio send ")
    assert "mcastio: unrecognized arguments: two" in err


@pytest.mark.parametrize("command", ["listen", "send", "ping", "doctor", "interfaces", "querier"])
def test_verbose_after_the_subcommand(command: str) -> None:
    """Friction 5: ``mcastio listen G -v`` was refused."""
    operands = {"listen": ["239.1.1.1:5"], "send": ["239.1.1.1:5", "x"], "ping": ["239.1.1.1:5"]}
    argv = [command, *operands.get(command, [])]
    assert build_parser().parse_args([*argv, "-v"]).verbose is True
    assert build_parser().parse_args(["-v", *argv]).verbose is True
    assert build_parser().parse_args(argv).verbose is False


def test_send_paced_without_a_count_means_until_stopped() -> None:
    """Friction 4: ``send G hi --rate 10`` sent once; a pace with no count is forever."""
    from mcastio._cli.send import rounds_wanted

    def wanted(*argv: str) -> int | None:
        return rounds_wanted(build_parser().parse_args(["send", "239.1.1.1:5", *argv]))

    assert wanted("hi") == 1
    assert wanted("hi", "--rate", "10") is None
    assert wanted("hi", "--interval", "0.5") is None
    assert wanted("hi", "--rate", "10", "-c", "3") == 3
    assert wanted("--lines") is None


def test_listen_lines_show_group_and_port_and_payloads_print_whole() -> None:
    """Frictions 2 and 7: the destination port, and the whole payload on request."""
    from mcastio._cli.fmt import listen_header, payload_text

    dgram = Datagram(b"x" * 300 + b"\nend\x07", ("10.0.0.2", 40000), "239.1.1.1", "eth1")
    line = datagram_line(dgram, WHEN, 1, port=5001, dest_width=16)
    assert line.split()[3] == "239.1.1.1:5001"
    header = listen_header(16, ports=True)
    assert header.index("GROUP:PORT") == line.index("239.1.1.1:5001")
    body = payload_text(dgram.data)
    assert all(len(ln) <= 80 for ln in body)
    assert "".join(ln[4:] for ln in body[:-1]) == "x" * 300
    assert body[-1] == "    end."


def test_ping_operands_split_into_one_group_per_family_and_peers() -> None:
    from mcastio._cli.ping import split_operands

    targets, peers = split_operands(["239.1.1.1:9", "10.0.0.2", "[ff12::1]:9", "fd00::2"])
    assert [(str(g), p) for g, p in targets] == [("239.1.1.1", 9), ("ff12::1", 9)]
    assert peers == ["10.0.0.2", "fd00::2"]
    with pytest.raises(ValueError, match="one group per address family"):
        split_operands(["239.1.1.1:9", "239.1.1.2:9"])
    with pytest.raises(ValueError, match="not of the group's address family"):
        split_operands(["239.1.1.1:9", "fd00::2"])
