"""Shared fixtures: namespace labs and guards against leaked resources."""

from __future__ import annotations

import asyncio
import atexit
import gc
import ipaddress
import os
import signal
import socket
import subprocess
import threading
import warnings
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, NoReturn, TypeVar

import pytest

from mcastio.testing import Lab, find_tool, lab_support, tcpdump_support

# A suite started in the background by a non-interactive shell (`cmd &`) inherits
# SIGINT ignored, and so would every program it starts, which then cannot be
# stopped with Ctrl-C as the tests do: the programs it starts get the default.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T], *, timeout: float = 30) -> T:
    """asyncio.run that fails the test if the coroutine leaves tasks behind."""

    async def checked() -> T:
        result = await asyncio.wait_for(coro, timeout)
        me = asyncio.current_task()
        leftovers = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
        assert not leftovers, f"leaked tasks: {leftovers}"
        return result

    return asyncio.run(checked())


async def wait_for(cond: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
    """Poll ``cond`` until it holds; fail the test if it does not within ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"not within {timeout}s: {what or cond}")
        await asyncio.sleep(0.005)


def _loopback_works() -> bool:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("127.0.0.1", 9))
    except OSError:
        return False
    return True


@pytest.fixture(scope="session", autouse=True)
def _loopback_up() -> None:
    """Bring lo up where it is down: a fresh namespace (``unshare -rnm``) starts so,
    and the loopback tests need it. A host's lo is always up, so nothing changes there."""
    if _loopback_works():
        return
    ip = find_tool("ip")
    if ip is not None:
        subprocess.run([ip, "link", "set", "lo", "up"], capture_output=True, check=False)


def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.fixture(autouse=True)
def _leak_guard() -> Iterator[None]:
    """Fail a test that leaks descriptors, threads or emits a ResourceWarning."""
    fds_before = _fds()
    threads_before = set(threading.enumerate())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        yield
        gc.collect()
    leaked_warnings = [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert not leaked_warnings, f"ResourceWarning: {[str(w.message) for w in leaked_warnings]}"
    new_threads = [t for t in threading.enumerate() if t not in threads_before and t.is_alive()]
    assert not new_threads, f"leaked threads: {new_threads}"
    leaked = _fds() - fds_before
    # listdir itself holds one descriptor that is gone again by the next call.
    if leaked:
        gc.collect()
        leaked = {fd for fd in _fds() - fds_before if os.path.exists(f"/proc/self/fd/{fd}")}
    targets = [os.readlink(f"/proc/self/fd/{fd}") for fd in leaked]
    assert not leaked, f"leaked descriptors: {targets}"


def skip_or_fail(reason: str) -> NoReturn:
    """Skip a lab test for ``reason``; under CI=true a skip is a failure."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"lab tests must run in CI, but: {reason}")
    pytest.skip(reason)


def require(reason: str | None) -> None:
    """Go on when ``reason`` is None, else :func:`skip_or_fail` with it."""
    if reason is not None:
        skip_or_fail(reason)


def _require_lab() -> None:
    require(lab_support())


@pytest.fixture
def need_tcpdump() -> None:
    """Skip (fail under CI=true) where tcpdump cannot capture in the lab."""
    require(tcpdump_support())


def receive_drains() -> list[str]:
    """The drains this install has: the compiled one only where it was built (where a
    compiler was: ``test_drain.py`` fails when one was and the build did not happen)."""
    from mcastio import _drain

    pure = ["recvmmsg", "recvmsg"]
    return pure if _drain.cdrain is None else ["compiled", *pure]


@pytest.fixture(params=receive_drains())
def receive_drain(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test once with each receive drain: the compiled one (C), and the pure
    path's recvmmsg (through ctypes) and recvmsg."""
    return _use_drain(request.param, monkeypatch)


@pytest.fixture(params=receive_drains()[:2])
def receive_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test on the compiled path and on the pure one (recvmmsg): for the long
    tests with real peers, where a third run would cost more than it could find."""
    return _use_drain(request.param, monkeypatch)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--portable-pass",
        action="store_true",
        help="the portable pass of scripts/test: run with MCASTIO_PORTABLE=1, each test"
        " parametrized over the drains on the first drain only",
    )
    parser.addoption(
        "--pure-pass",
        action="store_true",
        help="the second pass of scripts/test: run with MCASTIO_PURE=1, leaving out the"
        " tests parametrized over the drains (the first pass ran each of their drains)"
        " and the files marked one_path",
    )


def _wider_than_link_v6(value: object) -> bool:
    values = value if isinstance(value, tuple) else (value,)
    for v in values:
        try:
            address = ipaddress.ip_address(v) if isinstance(v, str) else None
        except ValueError:
            continue
        # The scope is the low nibble of the second byte (RFC 4291 2.7): 2 is the link.
        v6 = isinstance(address, ipaddress.IPv6Address) and address.is_multicast
        if v6 and address is not None and (address.packed[1] & 0x0F) > 2:
            return True
    return False


def _portable_leaves_out(item: pytest.Item, portable_pass: bool) -> bool:
    """Whether the portable profile's run leaves ``item`` out (deselected: under
    CI=true a skipped lab test fails the run, and these are not missing anything)."""
    if item.get_closest_marker("linux_profile") is not None:
        return True
    callspec = getattr(item, "callspec", None)
    params = callspec.params if callspec is not None else {}
    # Linux cannot tell the arrival interface of an IPv6 group wider than the link
    # on this path, so the plan refuses it (mcastio/_platform/portable.py).
    if any(_wider_than_link_v6(v) for v in params.values()):
        return True
    # The portable path reads its receive sockets one way: once is enough.
    first = receive_drains()[0]
    drain = params.get("receive_drain", params.get("receive_path", first))
    return portable_pass and drain != first


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under ``MCASTIO_PORTABLE=1``: leave out what the Linux profile only can do
    (see :func:`_portable_leaves_out`).

    With ``--pure-pass``: every test, on the pure path, except those that already
    ran on each drain (``receive_drain``/``receive_path``): running their pure cases
    again would repeat the first pass exactly; and those marked ``one_path``, whose
    claims (IGMP and MLD on the wire, snooping, the CLI's output contract) no drain
    takes part in."""
    from mcastio._platform import capabilities

    portable_pass = bool(config.getoption("--portable-pass"))
    if portable_pass and capabilities().profile != "portable":
        raise pytest.UsageError("--portable-pass runs the portable profile: set MCASTIO_PORTABLE=1")
    if capabilities().profile == "portable":
        left_out = [i for i in items if _portable_leaves_out(i, portable_pass)]
        if left_out:
            config.hook.pytest_deselected(items=left_out)
            gone = set(left_out)
            items[:] = [i for i in items if i not in gone]
    if not config.getoption("--pure-pass"):
        return
    from mcastio import _drain

    if _drain.cdrain is not None:
        raise pytest.UsageError("--pure-pass runs the pure path: set MCASTIO_PURE=1")
    kept: list[pytest.Item] = []
    repeated: list[pytest.Item] = []
    for item in items:
        names = getattr(item, "fixturenames", ())
        ran = "receive_drain" in names or "receive_path" in names
        ran = ran or item.get_closest_marker("one_path") is not None
        (repeated if ran else kept).append(item)
    if repeated:
        config.hook.pytest_deselected(items=repeated)
        items[:] = kept


def _use_drain(drain: str, monkeypatch: pytest.MonkeyPatch) -> str:
    from mcastio import _receive
    from mcastio._platform.linux import mmsg as _mmsg

    if drain != "recvmsg" and not _mmsg.available():
        skip_or_fail("this libc has no recvmmsg")
    monkeypatch.setattr(_receive, "USE_RECVMMSG", drain != "recvmsg")
    monkeypatch.setattr(_receive, "USE_COMPILED", drain == "compiled")
    return drain


@pytest.fixture
def make_lab() -> Iterator[Callable[..., Lab]]:
    """Build labs on demand; every one is destroyed when the test ends."""
    _require_lab()
    labs: list[Lab] = []

    def factory(**kwargs: Any) -> Lab:
        lab = Lab(**kwargs)
        labs.append(lab)
        lab.build()
        return lab

    yield factory
    for lab in labs:
        lab.destroy()


def module_lab(**kwargs: Any) -> Iterator[Lab]:
    """The body of a module-scoped lab fixture (``yield from module_lab(links=3)``):
    one lab for every test of a module, destroyed after the last."""
    _require_lab()
    lab = Lab(**kwargs)
    try:
        lab.build()
        yield lab
    finally:
        lab.destroy()


@pytest.fixture
def lab(make_lab: Callable[..., Lab]) -> Lab:
    """A host with three links (default route on eth0) and a peer behind each."""
    return make_lab(links=3)


def _world_readable_copy() -> str:
    """A directory user nobody can read, holding mcastio and its dependencies.

    The checkout may sit in a private directory (mode 700, like /root), and the
    dependencies in a virtualenv inside it: nobody could import neither from there.
    Copied once per session into a fresh temporary directory, readable by all.
    """
    import importlib.metadata
    import shutil
    import stat
    import tempfile

    global _PLAIN_COPY
    if _PLAIN_COPY is not None:
        return _PLAIN_COPY
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    target = tempfile.mkdtemp(prefix="mcastio-plain-")
    atexit.register(shutil.rmtree, target, True)
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(os.path.join(root, "mcastio"), os.path.join(target, "mcastio"), ignore=ignore)
    for dist in ("psutil", "netifaces-plus"):
        # Every file the installed distribution has (netifaces-plus is a package
        # and a compiled _netifaces), except its metadata and caches.
        for file in importlib.metadata.files(dist) or ():
            parts = file.parts
            if parts[0].endswith(".dist-info") or "__pycache__" in parts or ".." in parts:
                continue
            dest = os.path.join(target, *parts)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            shutil.copy2(str(file.locate()), dest)
    for dirpath, _dirnames, filenames in os.walk(target):
        for entry in (dirpath, *(os.path.join(dirpath, f) for f in filenames)):
            mode = os.stat(entry).st_mode
            os.chmod(
                entry,
                mode
                | stat.S_IRUSR
                | stat.S_IRGRP
                | stat.S_IROTH
                | (stat.S_IXGRP | stat.S_IXOTH if stat.S_ISDIR(mode) else 0),
            )
    _PLAIN_COPY = target
    return target


_PLAIN_COPY: str | None = None


def _plain_user_prefix() -> list[str]:
    """The command prefix that runs what follows as a plain user, without sbin.

    As real root: setpriv to user nobody. When the suite itself runs as a plain
    user inside ``unshare -rnm`` (the namespace's root is that user), a plain user
    is one step away: a mount namespace where the host's /run shows again (the
    suite's private /run unmounted), then a user namespace of uid 1000, without
    capabilities, so /run is not writable to it, as for any plain user.
    """
    from mcastio.testing._support import _in_user_namespace

    if os.geteuid() == 0 and not _in_user_namespace():
        if find_tool("setpriv") is None:
            skip_or_fail("setpriv (util-linux) is needed to become a plain user")
        return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    if os.geteuid() != 0:
        skip_or_fail("needs root or a user namespace (scripts/test gives one)")
    unshare = find_tool("unshare")
    if unshare is None:
        skip_or_fail("unshare (util-linux) is needed to become a plain user")
    remount = 'umount -l /run 2>/dev/null; exec "$@"'
    user = [unshare, "--user", "--map-user=1000", "--map-group=1000"]
    return [unshare, "-m", "sh", "-c", remount, "sh", *user]


def as_plain_user(*python_args: str) -> list[str]:
    """argv running Python as a plain user (nobody), with a login PATH that lacks sbin.

    That user runs a world-readable copy of the package and its dependencies (see
    :func:`_world_readable_copy`), never the checkout itself. The interpreter
    running the tests may live where nobody cannot reach it (a pyenv under
    /root): then the system python3 of the same version runs.
    """
    import shutil
    import subprocess
    import sys

    python = sys.executable
    drop = _plain_user_prefix()
    probe = subprocess.run([*drop, "env", python, "-c", ""], capture_output=True, check=False)
    if probe.returncode != 0:
        system = shutil.which("python3", path="/usr/bin:/bin")
        version = f"{sys.version_info[0]}.{sys.version_info[1]}"
        if (
            system is None
            or subprocess.run(
                [system, "-c", f"import sys; assert '%d.%d' % sys.version_info[:2] == '{version}'"],
                capture_output=True,
                check=False,
            ).returncode
        ):
            skip_or_fail(f"no python{version} that user nobody can run")
        python = system
    copy = _world_readable_copy()
    env = [
        "env",
        "-i",
        # In the copy, not the checkout: "python -c" puts the working directory first
        # on sys.path, so a readable checkout would be imported instead of the copy.
        f"--chdir={copy}",
        "PATH=/usr/bin:/bin",
        "HOME=/tmp",
        f"PYTHONPATH={copy}",
        # Nothing written into the shared copy.
        "PYTHONDONTWRITEBYTECODE=1",
    ]
    return [*drop, *env, python, *python_args]


def wait_ready_line(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> str:
    """The first line a started program prints (e.g. an example's "ready ..."), or fail."""
    import select
    import time

    assert proc.stdout is not None
    fd, seen = proc.stdout.fileno(), b""
    deadline = time.monotonic() + timeout
    while b"\n" not in seen:
        if not select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
            raise AssertionError(f"no line within {timeout}s: {seen!r}")
        chunk = os.read(fd, 4096)
        if not chunk:
            raise AssertionError(f"exited before a line: {seen!r}")
        seen += chunk
    return seen.decode()
