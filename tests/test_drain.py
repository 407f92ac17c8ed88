"""Which drain runs: the compiled one unless MCASTIO_PURE=1 or it was not built."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import mcastio
from mcastio import _drain


def _path_in_child(**env: str) -> str:
    code = "import mcastio, mcastio._receive as r; print(mcastio.drain_path, r.USE_COMPILED)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def test_mcastio_pure_forces_the_pure_path() -> None:
    assert _path_in_child(MCASTIO_PURE="1") == "pure False"
    if _drain.cdrain is not None:
        # Built, and this process was not forced pure: a child is not either.
        assert _path_in_child(MCASTIO_PURE="0") == "compiled True"
    assert mcastio.drain_path in ("compiled", "pure")


def test_describe_says_which_path_and_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MCASTIO_PURE", raising=False)
    monkeypatch.delenv("MCASTIO_RECVMMSG", raising=False)
    assert _drain.describe(True) == "compiled (recvmmsg in C)"
    assert "C extension not built" in _drain.describe(False)
    monkeypatch.setenv("MCASTIO_PURE", "1")
    assert "MCASTIO_PURE=1" in _drain.describe(False)
    monkeypatch.setenv("MCASTIO_RECVMMSG", "0")
    assert _drain.describe(True) == "pure Python (recvmsg; MCASTIO_RECVMMSG=0)"
    for compiled in (True, False):
        assert len("receive path: " + _drain.describe(compiled)) <= 80
