"""No batched receive: what the receive path finds off Linux instead of ``linux.mmsg``.

See :mod:`.batch` for why. The receive path asks :func:`available` once, at
import, and reads one datagram per call when it says no; nothing else of
``linux.mmsg`` is reached then.
"""

from __future__ import annotations

__all__ = ["available"]


def available() -> bool:
    """Whether ``recvmmsg`` can be used here: never, off Linux."""
    return False
