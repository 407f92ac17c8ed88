"""Room for control messages, where the platform's CPython can read them at all.

``socket.CMSG_SPACE`` exists only where CPython's socket module was built with
the C macro (Modules/socketmodule.c compiles ``CMSG_LEN``/``CMSG_SPACE``,
``recvmsg`` and ``sendmsg`` under ``#ifdef CMSG_LEN``). Winsock spells it
``WSA_CMSG_SPACE``, so on Windows none of them exists (cpython issue 80398: no
``recvmsg`` there). Buffer sizes computed at import use :func:`cmsg_space`, so
that importing mcastio does not fail where no control message can be read.
"""

from __future__ import annotations

import socket

__all__ = ["cmsg_space"]


def cmsg_space(length: int) -> int:
    """``socket.CMSG_SPACE(length)``; 0 where there is no ``recvmsg`` to pass it to.

    0 is what such a platform can receive: no ancillary data. A caller that
    reads with ``recvmsg`` only runs where ``CMSG_SPACE`` exists too.
    """
    space = getattr(socket, "CMSG_SPACE", None)
    if space is None:
        return 0
    result: int = space(length)
    return result
