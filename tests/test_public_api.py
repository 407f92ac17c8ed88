"""The public surface: __all__ matches what the package exports."""

from __future__ import annotations

import ast
import dataclasses
import pathlib
import subprocess
import sys

import pytest

import mcastio


def test_all_matches_public_names() -> None:
    public = {n for n in dir(mcastio) if not n.startswith("_")} - {"testing"}
    assert set(mcastio.__all__) == public
    assert sorted(mcastio.__all__) == list(mcastio.__all__)


def test_every_exported_name_resolves_and_is_documented() -> None:
    for name in mcastio.__all__:
        obj = getattr(mcastio, name)
        assert obj.__doc__, f"{name} has no docstring"


def test_values_are_frozen_slotted_dataclasses() -> None:
    for cls in (
        mcastio.Datagram,
        mcastio.SendResult,
        mcastio.Interface,
        mcastio.EndpointStats,
        mcastio.KeepaliveState,
        mcastio.QuerierState,
        mcastio.RelayStats,
        mcastio.Capabilities,
    ):
        assert dataclasses.is_dataclass(cls)
        params = getattr(cls, "__dataclass_params__")  # noqa: B009
        assert params.frozen, cls
        assert "__slots__" in cls.__dict__, cls


def test_errors_share_one_root() -> None:
    assert issubclass(mcastio.EndpointClosedError, mcastio.MulticastError)
    assert issubclass(mcastio.MembershipLimitError, mcastio.MulticastError)
    assert not issubclass(mcastio.MulticastError, ValueError)


def test_package_ships_py_typed() -> None:
    import importlib.resources

    assert importlib.resources.files("mcastio").joinpath("py.typed").is_file()


def test_every_stub_is_package_data() -> None:
    # A stub left out of package-data is missing from the wheel, and users' type
    # checkers then see the compiled extension as Any.
    from fnmatch import fnmatch
    from pathlib import Path

    # tomllib is 3.11's; the project supports 3.10, where the check is left to 3.11+.
    tomllib = pytest.importorskip("tomllib")

    root = Path(__file__).resolve().parent.parent
    data = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    shipped = data["package-data"]
    stubs = sorted((root / "mcastio").rglob("*.pyi"))
    assert stubs, "no stub found: the check would prove nothing"
    for stub in stubs:
        package = ".".join(stub.parent.relative_to(root).parts)
        patterns = shipped.get(package, [])
        assert any(fnmatch(stub.name, pattern) for pattern in patterns), (package, stub.name)


def test_core_does_not_import_the_command_line() -> None:
    # A fresh interpreter: this test process may already have imported the CLI.
    code = (
        "import sys, mcastio\n"
        "bad = sorted(m for m in sys.modules if m.startswith('mcastio._cli') or m == 'argparse')\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_core_modules_never_import_upwards() -> None:
    # The library core sits below the command line and the test lab, never above.
    root = pathlib.Path(mcastio.__file__).parent
    for path in [*root.glob("_*.py"), *(root / "_platform").rglob("*.py")]:
        if path.name == "__main__.py":  # `python -m mcastio` is the command line
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module is not None:
                assert not node.module.startswith(("_cli", "testing")), (
                    path.name,
                    node.module,
                )
