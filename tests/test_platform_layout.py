"""The layout shows the platform seam: Linux's kernel interfaces live in one package.

mcastio/_platform/linux/ holds every module that speaks to Linux's kernel in a way
no other OS shares (rtnetlink, /proc and /sys, raw IGMP/MLD and packet sockets,
recvmmsg through ctypes and the compiled drain, the ancillary layouts, the Linux
profile's receive socket and joins, the interface flag bits). The core reaches
them there, after :func:`mcastio._platform.capabilities` said yes. These checks
read the source, so a module that starts opening /proc or an AF_NETLINK socket,
setting IP_MULTICAST_ALL or packing an ip_mreqn outside the package fails here,
not on a Mac.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

from mcastio._platform import LINUX_ONLY_MODULES

pytestmark = pytest.mark.one_path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "mcastio"
LINUX = PACKAGE / "_platform" / "linux"

#: socket names only Linux's kernel gives meaning to.
LINUX_SOCKET_NAMES = {"AF_NETLINK", "NETLINK_ROUTE", "AF_PACKET", "SOCK_RAW", "SO_BINDTODEVICE"}

#: Options only Linux's kernel has, which the core must not set itself: whoever reads
#: or imports one of these names outside the package is setting a Linux-only option.
LINUX_OPTION_NAMES = {"IP_MULTICAST_ALL", "IPV6_MULTICAST_ALL", "SO_RXQ_OVFL", "SO_MEMINFO"}
#: A name that holds one of Linux's struct layouts (``struct ip_mreqn``, include/uapi/linux/in.h).
LINUX_LAYOUT_MARK = "MREQN"
#: Linux's interface flag bits (include/uapi/linux/if.h), as the rtnetlink dump gives
#: them: the BSDs number some differently (IFF_MULTICAST is 0x8000 in their net/if.h).
LINUX_FLAG_PREFIX = "IFF_"

#: Known places outside the package, each with its reason (path relative to mcastio/).
ALLOWED: set[tuple[str, str]] = {
    # The demo's naive peers join by index inside the network-namespace labs it
    # builds: Linux by nature, as testing/ is.
    ("_cli/demo.py", "mreqn"),
}


def _core_modules() -> list[Path]:
    # testing/ builds network-namespace labs: Linux by nature, never imported by mcastio.
    return [
        path
        for path in sorted(PACKAGE.rglob("*.py"))
        if LINUX not in path.parents and PACKAGE / "testing" not in path.parents
    ]


def _docstrings(tree: ast.AST) -> set[int]:
    found: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            found.add(id(body[0].value))
    return found


def _linux_facts(path: Path) -> set[str]:
    """What in ``path`` is Linux kernel knowledge: paths under /proc or /sys, Linux-only
    socket names, ctypes (libc's recvmmsg)."""
    tree = ast.parse(path.read_text())
    docs = _docstrings(tree)
    facts: set[str] = set()
    for node in ast.walk(tree):
        text: str | None = None
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            text = node.value
        elif isinstance(node, ast.JoinedStr) and node.values:
            first = node.values[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                text = first.value
        # A path has no spaces; a message that quotes one ("/proc/net/igmp: V3 on") does.
        if text is not None and text.startswith(("/proc/", "/sys/")) and " " not in text:
            facts.add(text)
        if isinstance(node, ast.Attribute) and node.attr in LINUX_SOCKET_NAMES:
            facts.add(node.attr)
        facts |= _linux_options_and_layouts(node)
        if isinstance(node, ast.Import) and any(a.name == "ctypes" for a in node.names):
            facts.add("ctypes")
        if isinstance(node, ast.ImportFrom) and node.module == "ctypes":
            facts.add("ctypes")
    return facts


def _linux_options_and_layouts(node: ast.AST) -> set[str]:
    """Linux-only option names, struct layouts and flag bits ``node`` reads, defines or imports."""
    if isinstance(node, ast.Attribute):
        names = [node.attr]
    elif isinstance(node, ast.Name):
        names = [node.id]
    elif isinstance(node, ast.alias):
        names = [node.name.rsplit(".", 1)[-1]]
    elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        names = [node.name]
    else:
        return set()
    return {
        n
        for n in names
        if n in LINUX_OPTION_NAMES
        or LINUX_LAYOUT_MARK in n.upper()
        or n.lstrip("_").startswith(LINUX_FLAG_PREFIX)
    }


def test_linux_kernel_knowledge_lives_in_the_linux_package() -> None:
    found = {
        (path.relative_to(PACKAGE).as_posix(), fact)
        for path in _core_modules()
        for fact in _linux_facts(path)
    }
    assert found - ALLOWED == set()
    # An allowance nobody needs any more goes too.
    assert found >= ALLOWED


def test_the_checks_see_what_the_package_holds() -> None:
    # Proof the reader finds such facts at all: the package itself is full of them.
    facts = set().union(*(_linux_facts(path) for path in LINUX.glob("*.py")))
    assert {"AF_NETLINK", "AF_PACKET", "SOCK_RAW", "ctypes"} <= facts
    assert LINUX_OPTION_NAMES | {"IP_MREQN", "_IFF_MULTICAST"} <= facts
    assert any(fact.startswith("/proc/") for fact in facts)
    assert any(fact.startswith("/sys/") for fact in facts)


def test_every_linux_only_module_exists_in_the_package() -> None:
    # A rename that leaves the set behind would make the platform simulation
    # (test_platforms_import.py) block nothing.
    for name in LINUX_ONLY_MODULES:
        if name.startswith("mcastio._platform.linux."):
            stem = name.rsplit(".", 1)[1]
            assert (LINUX / f"{stem}.py").exists() or (LINUX / f"{stem}.c").exists(), name
        else:
            assert importlib.util.find_spec(name) is not None, name
