"""The examples on a real kernel: they work, explain themselves and quit cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from mcastio.testing import Lab
from tests.test_cli_lab import ROOT, finish

pytestmark = pytest.mark.lab

EXAMPLES = os.path.join(ROOT, "examples")


def example(name: str, *args: str) -> list[str]:
    return ["env", f"PYTHONPATH={ROOT}", sys.executable, os.path.join(EXAMPLES, name), *args]


@pytest.mark.parametrize("name", ["chat.py", "protocol.py"])
def test_examples_have_a_usage_note(name: str) -> None:
    proc = subprocess.run(example(name, "--help"), capture_output=True, text=True, check=False)
    assert proc.returncode == 0
    assert "sage" in proc.stdout or "usage" in proc.stdout
    assert "239.255.0.1" in proc.stdout


def test_chat_sends_hears_and_quits_on_ctrl_c_without_enter(lab: Lab) -> None:
    link = lab.link[1]
    listener = lab.peer_listen(link, "239.255.8.1", 45001)
    chat = lab.popen(
        lab.host, *example("chat.py", "239.255.8.1", "45001"),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert chat.stdin is not None
    assert chat.stdout is not None
    assert chat.stdout.readline().decode().startswith("joined 239.255.8.1:45001 on eth0, eth1")
    chat.stdin.write(b"hello peers\n")
    chat.stdin.flush()
    listener.wait_for(b"hello peers")
    lab.peer_send(link, "239.255.8.1", 45001, b"hello host\n")
    assert chat.stdout.readline().decode() == f"[eth1 {link.peer_addr}] hello host\n"
    # Ctrl-C with stdin still open and no Enter pressed: it must end at once.
    chat.send_signal(signal.SIGINT)
    started = time.monotonic()
    code, _out, err = finish(chat, timeout=10)
    assert time.monotonic() - started < 5
    assert code == 0, err
    assert "Traceback" not in err


def test_protocol_example_pings_every_link(lab: Lab) -> None:
    listeners = [lab.peer_listen(link, "239.255.8.2", 45002) for link in lab.link]
    proc = lab.run(
        lab.host, *example("protocol.py", "239.255.8.2", "45002", "--count", "2",
                           "--interval", "0.1", "--duration", "0.3"),
    )  # fmt: skip
    assert proc.returncode == 0
    assert [listener.lines() for listener in listeners] == [[b"pingping"]] * 3


def test_readme_quick_start_runs_alone_and_ends(lab: Lab) -> None:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    code = readme.split("```python\n", 1)[1].split("```", 1)[0]
    proc = lab.run(lab.host, "env", f"PYTHONPATH={ROOT}", sys.executable, "-c", code, timeout=10)
    lines = proc.stdout.splitlines()
    assert lines[0] == "[('eth0', True), ('eth1', True), ('eth2', True)]"
    heard = sorted(line.split()[0] for line in lines[1:])
    assert heard == ["eth0", "eth1", "eth2"]
    assert all(line.endswith("b'hello'") for line in lines[1:])
