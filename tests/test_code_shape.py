"""The code keeps the shape the project set itself: one job per module, small classes,
and a core that never reaches into the command line.

A module past ~500 lines or a class past ~300 is doing more than one job; these
checks read the source, so the split happens when the file grows, not in review.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.one_path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "mcastio"
CLI = PACKAGE / "_cli"

MAX_MODULE_LINES = 500
MAX_CLASS_LINES = 300


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _name(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def test_no_module_is_over_500_lines() -> None:
    long = {
        _name(path): n
        for path in _modules()
        if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split them by job): {long}"


def test_no_class_is_over_300_lines() -> None:
    long: dict[str, int] = {}
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
                # From the first decorator: a dataclass's decorator is part of it.
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                if (n := node.end_lineno - first + 1) > MAX_CLASS_LINES:
                    long[f"{_name(path)}:{node.name}"] = n
    assert not long, f"classes over {MAX_CLASS_LINES} lines: {long}"


def _imports_cli(source: str, package: tuple[str, ...]) -> list[int]:
    """The lines of ``source`` (a module of ``package``, e.g. ("mcastio", "_platform"))
    whose imports name mcastio's CLI package."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                # Resolve "from ..x import y" against the module's own package.
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            else:
                module = node.module or ""
            names = [module, *(f"{module}.{a.name}" for a in node.names)]
        else:
            continue
        if any(n == "mcastio._cli" or n.startswith("mcastio._cli.") for n in names):
            found.append(node.lineno)
    return found


def test_the_core_never_imports_the_cli() -> None:
    core = [
        path for path in _modules() if CLI not in path.parents and path != PACKAGE / "__main__.py"
    ]
    assert core, "no core modules found"
    found = [
        f"{_name(path)}:{line}"
        for path in core
        for line in _imports_cli(path.read_text(), path.relative_to(ROOT).parent.parts)
    ]
    assert not found, f"core modules importing mcastio._cli: {found}"


@pytest.mark.parametrize(
    ("source", "hits"),
    [
        ("from .._cli import main\n", [1]),
        ("from .. import _cli\n", [1]),
        ("import mcastio._cli.doctor\n", [1]),
        ("x = 1\nfrom mcastio import _cli\n", [2]),
        ("from .. import _model\nfrom ._cli import y\n", []),  # mcastio._platform._cli
        ("from . import _clio\n", []),
    ],
)
def test_the_cli_check_sees_every_spelling(source: str, hits: list[int]) -> None:
    # The check above must not pass merely because it cannot see an import.
    assert _imports_cli(source, ("mcastio", "_platform")) == hits


def test_importing_mcastio_loads_no_cli_module() -> None:
    code = (
        "import sys, mcastio, mcastio.testing\n"
        "print(sorted(m for m in sys.modules if m.startswith('mcastio._cli')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "[]", out.stdout
