"""Which receive drain runs: the compiled one, or the pure-Python one.

``mcastio._platform.linux._cdrain`` (C, built from ``_cdrain.c`` where a compiler
was present at install) reads with ``recvmmsg`` and builds the ``Datagram`` values
itself; the pure path (:mod:`._receive` with :mod:`._platform.linux.mmsg`, or plain
``recvmsg``) does the same in Python. Both give identical values and counts.
``MCASTIO_PURE=1`` in the environment forces the pure path; :data:`COMPILED` says
which one new endpoints use.
"""

from __future__ import annotations

import os
from types import ModuleType

from ._platform.batch import mmsg as _mmsg

__all__ = ["COMPILED", "cdrain", "describe", "drain_path"]


def _load() -> ModuleType | None:
    if os.environ.get("MCASTIO_PURE", "") not in ("", "0"):
        return None
    try:
        from ._platform.linux import _cdrain
    except ImportError:
        # Installed without a compiler (or not on Linux): the pure path.
        return None
    return _cdrain


#: The compiled extension, or None when the pure path runs.
cdrain = _load()

#: Whether new endpoints read with the compiled drain.
COMPILED = cdrain is not None

#: ``mcastio.drain_path``: "compiled" when new endpoints read (and ``send_many``
#: sends) through the C extension, "pure" when through Python alone.
drain_path = "compiled" if COMPILED else "pure"


def describe(compiled: bool = COMPILED) -> str:
    """One line for ``mcastio doctor``: which receive path is in use, and why."""
    if compiled and os.environ.get("MCASTIO_RECVMMSG", "1") != "0":
        return "compiled (recvmmsg in C)"
    if os.environ.get("MCASTIO_PURE", "") not in ("", "0"):
        why = "MCASTIO_PURE=1"
    else:
        why = "C extension not built"
    how = "recvmmsg via ctypes" if _mmsg.available() else "recvmsg"
    if os.environ.get("MCASTIO_RECVMMSG", "1") == "0":
        how, why = "recvmsg", "MCASTIO_RECVMMSG=0"
    return f"pure Python ({how}; {why})"
