"""``import mcastio``, the CLI's --help and --version and the pure unit tests, as
macOS, FreeBSD and Windows.

No such machine runs here, so each test starts a fresh interpreter that reports
the other platform in ``sys.platform``, cannot import mcastio's Linux-only
modules (:data:`mcastio._platform.LINUX_ONLY_MODULES`) and whose ``socket``
module lacks the Linux-only names CPython leaves out elsewhere. The standard
library and the dependencies stay Linux's own. What this proves: nothing mcastio
imports needs Linux at import time, and the Linux-only features refuse with an
error naming the platform. What it cannot prove: that sockets behave there as
the docs say (docs/explanation/platforms.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mcastio._platform import LINUX_ONLY_MODULES

pytestmark = pytest.mark.one_path

ROOT = Path(__file__).resolve().parent.parent

# Names CPython's socket module defines only where the C headers do: AF_NETLINK
# and AF_PACKET need linux/netlink.h and netpacket/packet.h, SO_BINDTODEVICE is
# Linux's. macOS and Windows have no SOCK_NONBLOCK/SOCK_CLOEXEC either (FreeBSD
# does); Windows has no CMSG_LEN/CMSG_SPACE (Modules/socketmodule.c defines them,
# and recvmsg, under #ifdef CMSG_LEN; Winsock spells it WSA_CMSG_LEN), no
# MSG_DONTWAIT (Winsock defines none) and no SO_REUSEPORT (mingw-w64's winsock2.h
# has SO_REUSEADDR and SO_EXCLUSIVEADDRUSE only).
LINUX_ONLY_NAMES = ("AF_NETLINK", "NETLINK_ROUTE", "AF_PACKET", "SO_BINDTODEVICE")
NO_SOCK_FLAGS = ("SOCK_NONBLOCK", "SOCK_CLOEXEC")
WINSOCK_LACKS = ("CMSG_LEN", "CMSG_SPACE", "MSG_DONTWAIT", "SO_REUSEPORT")

PLATFORMS = {
    # sys.platform: (platform name, socket names that platform's CPython lacks)
    "darwin": ("darwin", LINUX_ONLY_NAMES + NO_SOCK_FLAGS),
    "freebsd14": ("freebsd", LINUX_ONLY_NAMES),
    "win32": ("windows", LINUX_ONLY_NAMES + NO_SOCK_FLAGS + WINSOCK_LACKS),
}

# The standard library and mcastio's dependencies choose their own platform code
# at import (asyncio its event loop, psutil its C module): they are imported
# before sys.platform changes, so what runs as the other platform is mcastio.
PRELUDE = """\
import importlib.abc, socket, sys
import asyncio, ctypes, ctypes.util, mmap, selectors, subprocess, sysconfig
sysconfig.get_config_vars()
import netifaces, psutil

class _LinuxOnly(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name in {blocked!r}:
            raise ImportError(f"{{name}} is Linux-only (blocked: running as {platform!r})")
        return None

def become_the_platform():
    sys.platform = {platform!r}
    for name in {strip!r}:
        if hasattr(socket, name):
            delattr(socket, name)
    for name in [n for n in dir(socket) if n.startswith("PACKET_")]:
        delattr(socket, name)
    sys.meta_path.insert(0, _LinuxOnly())
    if sys.platform == "win32":
        # CPython on Windows loads a library by name only: CDLL(None) raises
        # "TypeError: LoadLibrary() argument 1 must be str, not None" (pytesmo#177).
        cdll_init = ctypes.CDLL.__init__

        def by_name_only(self, name, *args, **kwargs):
            if name is None:
                raise TypeError("LoadLibrary() argument 1 must be str, not None")
            cdll_init(self, name, *args, **kwargs)

        ctypes.CDLL.__init__ = by_name_only
"""


def run_as(
    platform: str, code: str, *, strip: tuple[str, ...] | None = None, now: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter that takes itself for ``platform``.

    ``now=False``: ``code`` calls ``become_the_platform()`` itself, when it is time.
    """
    names = PLATFORMS[platform][1] if strip is None else strip
    prelude = PRELUDE.format(platform=platform, strip=names, blocked=sorted(LINUX_ONLY_MODULES))
    if now:
        prelude += "become_the_platform()\n"
    env = {k: v for k, v in os.environ.items() if k != "MCASTIO_PORTABLE"}
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("platform", sorted(PLATFORMS))
def test_import_mcastio(platform: str) -> None:
    out = run_as(
        platform,
        """
        import dataclasses, json, sys
        import mcastio
        loaded = sorted(m for m in sys.modules if m.startswith("mcastio."))
        caps = dataclasses.asdict(mcastio.capabilities())
        print(json.dumps({"loaded": loaded, "caps": caps}))
        """,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert not set(result["loaded"]) & LINUX_ONLY_MODULES
    caps = result["caps"]
    assert caps["platform"] == PLATFORMS[platform][0]
    assert caps["profile"] == "portable"
    assert caps["watch"] == "poll"
    assert (caps["keeper"], caps["querier"], caps["procfs"]) == (False, False, False)


def test_windows_import_reads_no_linux_batch_and_no_cmsg() -> None:
    # What Windows' CPython lacks is gone (see PLATFORMS), ctypes.CDLL(None) raises
    # as it does there, and recvmmsg's module (Linux's layouts) is never imported.
    out = run_as(
        "win32",
        """
        import ctypes, json, sys
        import mcastio
        from mcastio import _net, _receive
        try:
            ctypes.CDLL(None)
            refused = False
        except TypeError:
            refused = True
        print(json.dumps({
            "refused": refused,
            "batched": _receive.USE_RECVMMSG,
            "anc": _net.ANC_BUFSIZE,
            "drain": mcastio.drain_path,
        }))
        """,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {
        "refused": True,
        "batched": False,
        "anc": 0,
        "drain": "pure",
    }


def test_linux_batch_module_is_linux_only() -> None:
    # The simulation above blocks it: proof that it is blocked for a reason.
    assert "mcastio._platform.linux.mmsg" in LINUX_ONLY_MODULES
    from mcastio._platform.batch import mmsg

    assert mmsg.__name__ == "mcastio._platform.linux.mmsg"


@pytest.mark.parametrize("platform", sorted(PLATFORMS))
def test_command_line_help_and_version(platform: str) -> None:
    for argv, expect in ((["--help"], "usage: mcastio"), (["--version"], "mcastio 0.")):
        out = run_as(
            platform,
            f"""
            import runpy, sys
            sys.argv = ["mcastio", *{argv!r}]
            runpy.run_module("mcastio", run_name="__main__")
            """,
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith(expect), out.stdout
        assert all(len(line) <= 80 for line in out.stdout.splitlines())


NAMES = {"darwin": "macOS", "freebsd14": "FreeBSD", "win32": "Windows"}


@pytest.mark.parametrize("platform", sorted(PLATFORMS))
def test_linux_only_features_name_the_platform(platform: str) -> None:
    out = run_as(
        platform,
        """
        import asyncio, json, logging, sys
        import mcastio
        from mcastio._cli import main

        said = []
        try:
            asyncio.run(mcastio.Querier().start())
        except mcastio.MulticastError as exc:
            said.append(str(exc))
        # The keeper is on by default: left out, with the reason in the log.
        logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="log: %(message)s")
        endpoint = mcastio.MulticastEndpoint("239.1.2.3", 5353)
        print(json.dumps({"said": said, "keepers": len(endpoint._engine.keepalives)}))
        sys.stdout.flush()
        sys.exit(main(["doctor", "-d", "0.1"]))
        """,
    )
    assert out.returncode == 1, out.stderr
    where = NAMES[platform]
    lines = out.stdout.splitlines()
    log = [ln for ln in lines if ln.startswith("log: ")]
    result = json.loads(next(ln for ln in lines if ln.startswith("{")))
    [querier] = result["said"]
    assert querier.startswith("the querier (raw IGMP/MLD queries) is not available on " + where)
    assert result["keepers"] == 0
    assert any(f"the membership keeper is not available on {where}" in ln for ln in log), log
    assert out.stderr.startswith(
        f"mcastio: mcastio doctor (it reads /proc and /sys) is not available on {where}"
    )
    assert "watching the host" not in out.stdout


#: Unit tests of pure logic: no socket, no lab, no /proc.
PURE_TESTS = [
    "tests/test_model.py",
    "tests/test_options.py",
    "tests/test_relay_rules.py",
    "tests/test_replies_model.py",
    "tests/test_onlink.py",
    "tests/test_keeper.py",
    "tests/test_procnet.py",
    "tests/test_groupinfo.py",
    "tests/test_platform_hints.py",
    "tests/test_platform_portable.py",
]


@pytest.mark.parametrize("platform", sorted(PLATFORMS))
def test_pure_unit_tests(platform: str) -> None:
    # pytest itself reads sys.platform as it starts (its console set-up): the
    # platform changes once it has, before a test module (and mcastio) is imported.
    # Without tests/conftest.py, which imports mcastio.testing (the Linux lab).
    out = run_as(
        platform,
        f"""
        import sys, pytest

        class Become:
            def pytest_configure(self, config):
                become_the_platform()

        args = ["-q", "--noconftest", "-p", "no:cacheprovider", "-p", "no:xdist"]
        sys.exit(pytest.main([*args, *{PURE_TESTS!r}], plugins=[Become()]))
        """,
        now=False,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert " passed" in out.stdout
    assert " skipped" not in out.stdout
