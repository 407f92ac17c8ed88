"""Which drain runs: the compiled one unless MCASTIO_PURE=1 or it was not built."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import struct
import subprocess
import sys
import sysconfig

import pytest

import mcastio
from mcastio import _drain, _sendmany
from mcastio._model import parse_group


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


def test_the_compiled_drain_is_built_where_a_compiler_is() -> None:
    """Where gcc and Python.h exist, ``pip install`` must have built the extension (the
    receive tests then run on it); elsewhere the package runs on the pure path."""
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    headers = os.path.join(sysconfig.get_paths()["include"], "Python.h")
    built = importlib.util.find_spec("mcastio._platform.linux._cdrain") is not None
    if shutil.which(cc) is not None and os.path.exists(headers) and sys.platform == "linux":
        assert built, f"{cc} and {headers} exist but mcastio._platform.linux._cdrain was not built"
    else:
        assert mcastio.drain_path == "pure"


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


def test_an_uninitialised_compiled_drain_refuses_to_read() -> None:
    if _drain.cdrain is None:
        pytest.skip("mcastio._platform.linux._cdrain is not built (or MCASTIO_PURE is set)")
    drain = _drain.cdrain.Drain.__new__(_drain.cdrain.Drain)
    with pytest.raises(RuntimeError, match="__init__"):
        drain.read(0, False, 1)


def test_gso_runs_are_same_size_and_within_the_kernel_limits() -> None:
    run = _sendmany._same_size_run
    assert run([b"x" * 100] * 70, 0) == _sendmany.GSO_MAX_SEGMENTS
    assert run([b"x" * 1400] * 64, 0) == _sendmany.GSO_MAX_BYTES // 1400
    assert run([b"x" * 1401] * 3, 0) == 0  # may not fit a link's MTU
    assert run([b""] * 3, 0) == 0
    assert run([b"a" * 10, b"b" * 10, b"c" * 20], 0) == 2
    assert run([b"a" * 10, b"b" * 10, b"c" * 20], 2) == 1


def test_sockaddr_is_the_kernel_layout() -> None:
    v4 = _sendmany.sockaddr(parse_group("239.1.2.3"), 5000)
    assert v4 == struct.pack("=HH4s8x", socket.AF_INET, socket.htons(5000), bytes([239, 1, 2, 3]))
    v6 = _sendmany.sockaddr(parse_group("ff05::1:3"), 5353)
    packed = socket.inet_pton(socket.AF_INET6, "ff05::1:3")
    assert v6 == struct.pack("=HHI16sI", socket.AF_INET6, socket.htons(5353), 0, packed, 0)
