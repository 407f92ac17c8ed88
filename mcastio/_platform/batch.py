"""The batched receive module the receive path reads with: Linux's, or none.

On Linux this is :mod:`.linux.mmsg` (``recvmmsg(2)`` through ctypes). Anywhere
else it is :mod:`._nobatch`, whose :func:`available` says no, and ``mmsg`` is
never imported: its ``ctypes.CDLL(None)`` raises TypeError on Windows (CPython
there calls ``LoadLibrary``, which takes a name only; pytesmo#177,
beetbox/pyacoustid#55) and Winsock has no ``MSG_DONTWAIT``. FreeBSD's libc does
have ``recvmmsg``, but not with Linux's layouts, which ``mmsg`` declares:
freebsd-src sys/sys/socket.h @00b5ffde has ``int msg_iovlen``, ``socklen_t
msg_controllen`` and ``socklen_t cmsg_len`` (Linux: ``size_t``), an ``ssize_t
msg_len`` in ``struct mmsghdr`` and a ``size_t`` count to ``recvmmsg``. Calling
it with Linux's structures would misread every datagram, so off Linux nothing
batches and each read is one datagram.
"""

from __future__ import annotations

import sys

__all__ = ["mmsg"]

# mypy checks as Linux (sys.platform is its host's): it sees the first branch.
if sys.platform.startswith("linux"):
    from .linux import mmsg
else:
    from . import _nobatch as mmsg
