"""The command line's one output contract, for every subcommand (docs/cli.md).

Exit 2 for usage mistakes, 1 for "ran but failed", 0 otherwise; one ``mcastio:``
prefix on stderr; options anywhere; 80 columns. The lab part runs each command
as ``scripts/cli-captures`` does and checks the captures in docs/cli.md are
current.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import importlib.util
import io
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from mcastio._cli import build_parser, main
from mcastio.testing import Lab
from tests.conftest import _require_lab

# Exit codes, prefixes, widths and captures: the same on either drain path.
pytestmark = pytest.mark.one_path

ROOT = Path(__file__).resolve().parent.parent


def _captures_module() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader(
        "cli_captures", str(ROOT / "scripts/cli-captures")
    )
    spec = importlib.util.spec_from_loader("cli_captures", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["cli_captures"] = module  # dataclasses look their module up there
    loader.exec_module(module)
    return module


def _subcommands() -> list[str]:
    parser = build_parser()
    [action] = [a for a in parser._actions if a.dest == "command"]
    assert action.choices is not None
    return sorted(action.choices)


SUBCOMMANDS = _subcommands()
#: What each subcommand needs besides options.
OPERANDS = {
    "listen": ["239.1.1.1:5"],
    "send": ["239.1.1.1:5", "x"],
    "ping": ["239.1.1.1:5"],
    "relay": ["mdns", "-i", "eth1", "-i", "eth2"],
}


def test_every_subcommand_is_covered() -> None:
    assert SUBCOMMANDS == [
        "demo", "doctor", "interfaces", "listen", "ping", "querier", "relay", "send"
    ]  # fmt: skip


def _main(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_an_unknown_option_is_exit_2_with_the_prefix_and_the_usage(command: str) -> None:
    code, out, err = _main([command, *OPERANDS.get(command, []), "--no-such-option"])
    assert code == 2
    assert out == ""
    assert err.startswith(f"usage: mcastio {command} ")
    assert all(len(line) <= 80 for line in err.splitlines())
    [message] = [ln for ln in err.splitlines() if not ln.startswith((" ", "usage:"))]
    assert message.startswith("mcastio: unrecognized arguments: --no-such-option")


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_help_fits_80_columns(command: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _err = _main([command, "--help"])
    assert code == 0
    assert all(len(line) <= 80 for line in out.splitlines()), out


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_verbose_goes_anywhere(command: str) -> None:
    argv = [command, *OPERANDS.get(command, [])]
    assert build_parser().parse_args([*argv, "-v"]).verbose
    assert build_parser().parse_args([command, "-v", *argv[1:]]).verbose


# -- on a lab host: every command's real output ---------------------------------------


@pytest.fixture(scope="module")
def captures() -> Iterator[dict[str, Any]]:
    _require_lab()
    module = _captures_module()
    with Lab(links=3) as lab:
        yield {"module": module, "captures": {c.name: c for c in module.scenarios(lab)}}


EXPECTED_EXIT = {"usage-error": 2}


@pytest.mark.lab
def test_each_command_keeps_the_contract(captures: dict[str, Any]) -> None:
    ran = captures["captures"]
    assert {c.argv[0] for c in ran.values()} >= set(SUBCOMMANDS)
    for name, capture in ran.items():
        assert capture.code == EXPECTED_EXIT.get(name, 0), (name, capture.stderr)
        lines = (capture.stdout + capture.stderr).splitlines()
        assert all(len(line) <= 80 for line in lines), (name, lines)
        messages = [ln for ln in capture.stderr.splitlines() if not ln.startswith((" ", "usage:"))]
        assert all(ln.startswith("mcastio: ") for ln in messages), (name, messages)


@pytest.mark.lab
def test_the_captures_in_docs_cli_md_are_current(captures: dict[str, Any]) -> None:
    """Refresh with: sudo python scripts/cli-captures (with mcastio's dependencies)."""
    module = captures["module"]
    documented = module.documented((ROOT / "docs" / "cli.md").read_text())
    for name, capture in captures["captures"].items():
        assert name in documented, f"docs/cli.md has no '{name}' capture"
        assert module.normalized(documented[name]) == module.normalized(capture.text()), name
