"""What a benchmark run's ratios depend on: CPU model, kernel, Python, system-call cost.

Printed at the top of every ``benchmarks/run.py`` run, so runs on different machines
say what differs (see docs/explanation/performance.md, "Why the fast path's gain depends on the
machine").
"""

from __future__ import annotations

import contextlib
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any


def machine() -> str:
    """CPU model, kernel, Python and the drain in use: what the ratios depend on."""
    import mcastio

    model = "unknown CPU"
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="ascii") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    mitigations = []
    for name in ("spectre_v2", "retbleed", "spec_rstack_overflow"):
        with contextlib.suppress(OSError):
            text = Path(f"/sys/devices/system/cpu/vulnerabilities/{name}").read_text()
            mitigations.append(f"{name}: {text.strip()[:60]}")
    return (
        f"mcastio benchmarks: {os.cpu_count()} x {model}, Linux {platform.release()},"
        f" Python {sys.version.split()[0]} ({platform.python_implementation()}),"
        f" drain: {mcastio.drain_path}, load average {load}\n"
        f"system call round trip (getppid): {syscall_ns():.0f} ns; " + "; ".join(mitigations)
    )


def syscall_ns(calls: int = 200_000) -> float:
    """What one system call costs here beyond a C call from Python: the kernel entry and
    exit that a plain loop pays per datagram and a batched drain per 32."""

    def per_call(func: Any) -> float:
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(calls):
                func()
            best = min(best, (time.perf_counter() - start) / calls * 1e9)
        return best

    # Both are C functions without arguments; only getppid enters the kernel.
    return per_call(os.getppid) - per_call(sys.getrecursionlimit)
