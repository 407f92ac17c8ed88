"""The docs against the code: every code block is run or says why not, the
reproductions on the explanation pages run, links resolve, and mkdocs builds.

Markers, on the line before a fenced block:

- ``<!-- run: lab -->``: a complete Python program (it builds its own
  ``mcastio.testing.Lab``) that this module runs; it must exit 0, and its
  asserts are the page's claims;
- ``<!-- capture: NAME -->``: output of ``scripts/cli-captures``, checked by
  tests/test_cli_contract.py;
- ``<!-- not run: REASON -->``: shown, not run, with the reason.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import _require_lab

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

_FENCE = re.compile(r"^```")
_MARKER = re.compile(r"^<!-- (run: lab|capture: \S+|not run: .+\S) -->$")


def code_blocks(page: Path) -> list[tuple[int, str, str]]:
    """(line number, marker line or "", code) of each fenced block of ``page``."""
    lines = page.read_text().splitlines()
    blocks, n = [], 0
    while n < len(lines):
        if _FENCE.match(lines[n]):
            start = n
            n += 1
            while n < len(lines) and not lines[n].startswith("```"):
                n += 1
            before = next((ln for ln in reversed(lines[:start]) if ln.strip()), "")
            blocks.append((start + 1, before.strip(), "\n".join(lines[start + 1 : n])))
        n += 1
    return blocks


def pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def test_every_code_block_is_run_or_says_why_not() -> None:
    unmarked = [
        f"{page.relative_to(ROOT)}:{line}"
        for page in pages()
        for line, marker, _code in code_blocks(page)
        if not _MARKER.match(marker)
    ]
    assert not unmarked, "code blocks without a run/not-run marker: " + ", ".join(unmarked)


RUN_BLOCKS = [
    pytest.param(code, id=f"{page.relative_to(DOCS)}:{line}")
    for page in pages()
    for line, marker, code in code_blocks(page)
    if marker == "<!-- run: lab -->"
]


@pytest.mark.lab
@pytest.mark.parametrize("code", RUN_BLOCKS)
def test_docs_program_runs(code: str) -> None:
    _require_lab()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_docs_paths_named_in_the_code_exist() -> None:
    """'docs/x.md' in a message or docstring must still be there after pages move."""
    sources = [*ROOT.glob("mcastio/**/*.py"), *ROOT.glob("examples/*.py"), ROOT / "README.md"]
    missing = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in sources
        for name in re.findall(r"docs/[\w/.-]+\.md", path.read_text())
        if not (ROOT / name).exists()
    }
    assert not missing, sorted(missing)


@pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("mkdocstrings") is None,
    reason="mkdocs and mkdocstrings are not installed (pip install -e '.[docs]')",
)
def test_mkdocs_build_strict_is_clean(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "site" / "reference" / "api" / "index.html").exists()


def test_the_api_reference_lists_every_public_name() -> None:
    """A name added to ``mcastio.__all__`` must reach docs/reference/api.md too."""
    import mcastio

    page = (DOCS / "reference" / "api.md").read_text()
    listed = set(re.findall(r"^ +- (\w+)$", page, re.M))
    assert set(mcastio.__all__) <= listed, sorted(set(mcastio.__all__) - listed)
