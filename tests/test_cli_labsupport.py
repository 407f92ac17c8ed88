"""The lab for a plain user: tools found outside $PATH, clear reasons when it cannot run."""

from __future__ import annotations

import os
import subprocess

import pytest

from mcastio.testing import Lab, LabError
from mcastio.testing._support import find_tool, lab_support, resolve, tool
from tests.conftest import as_plain_user, skip_or_fail

_BUILD = """
from mcastio.testing import Lab, lab_support
assert lab_support() is None, lab_support()
with Lab(links=2, sysctls={"net.ipv4.igmp_max_memberships": "7"}) as lab:
    out = lab.run(lab.host, "sysctl", "-n", "net.ipv4.igmp_max_memberships").stdout
    print("lab ok", out.strip(), lab.link[1].host_addr)
"""


def test_tools_are_found_in_sbin_with_a_path_that_lacks_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    for name in ("ip", "sysctl"):
        found = find_tool(name)
        if found is None:
            skip_or_fail(f"{name} is not installed")
        assert found.startswith("/")
        assert found.endswith("/" + name)
        assert resolve([name, "-V"]) == [found, "-V"]
    assert resolve(["/bin/true"]) == ["/bin/true"]
    assert find_tool("no-such-tool-mcastio") is None
    with pytest.raises(LabError, match="'no-such-tool-mcastio' command is not installed"):
        tool("no-such-tool-mcastio")


def test_a_missing_tool_is_named_with_its_package(monkeypatch: pytest.MonkeyPatch) -> None:
    import mcastio.testing._support as support

    monkeypatch.setattr(support, "_SBIN", ())
    monkeypatch.setenv("PATH", "/nonexistent")
    reason = lab_support()
    assert reason is not None
    assert "'ip' (iproute2)" in reason
    assert "'sysctl' (procps)" in reason
    assert "'unshare' (util-linux)" in reason
    with pytest.raises(LabError, match="'ip' \\(iproute2\\)"):
        Lab(links=1).build()


@pytest.mark.lab
def test_a_plain_user_without_sbin_on_path_builds_a_lab_under_unshare_rnm() -> None:
    argv = as_plain_user("-c", _BUILD)
    env_at = argv.index("env")
    # unshare -rnm between the dropped privileges and the interpreter.
    unshare = find_tool("unshare") or "unshare"
    argv = [*argv[:env_at], unshare, "-rnm", *argv[env_at:]]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["lab", "ok", "7", "10.200.1.1"]


@pytest.mark.lab
def test_unshare_without_a_mount_namespace_gets_a_hint() -> None:
    unshare = find_tool("unshare") or "unshare"
    code = "from mcastio.testing import lab_support; print(lab_support())"
    argv = as_plain_user("-c", code)
    env_at = argv.index("env")
    argv = [*argv[:env_at], unshare, "-rn", *argv[env_at:]]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "cannot mount a private /run" in proc.stdout
    assert "'unshare -rnm' (with -m), not 'unshare -rn'" in proc.stdout


@pytest.mark.lab
def test_the_plain_user_runs_a_copy_it_can_read_not_the_checkout() -> None:
    # A checkout in a private directory (mode 700, as /root is) is unreadable to the
    # user a test switches to: that user must import mcastio and its dependencies
    # from a copy every user can reach (defect 8 of issue 23).
    code = "import mcastio, psutil, netifaces; print(mcastio.__file__)"
    proc = subprocess.run(
        as_plain_user("-c", code), capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    imported = proc.stdout.strip()
    checkout = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    assert not imported.startswith(checkout + os.sep), imported
    # Every directory on the way to the copy lets others through (o+x).
    directory = os.path.dirname(imported)
    while directory != os.path.dirname(directory):
        assert os.stat(directory).st_mode & 0o001, f"{directory} is private"
        directory = os.path.dirname(directory)
