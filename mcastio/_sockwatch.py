"""The sockets an endpoint reads, each watched by a reader on the event loop.

Receive sockets feed the receive path; an endpoint's private transmit sockets
feed its replies (:mod:`._replies`). A shared transmit socket receives nothing
and is never watched (:mod:`._txsocket`).
"""

from __future__ import annotations

import asyncio
import socket

from ._errors import MulticastError
from ._pacing import Drain, SocketReader
from ._receive import ReceivePath
from ._replies import Replies

__all__ = ["SocketWatch"]


class SocketWatch:
    """One reader per socket read, started when it opens and stopped when it closes."""

    def __init__(
        self,
        receive: ReceivePath,
        replies: Replies,
        coalesce_delay: float,
        *,
        refuse_replies: bool = False,
    ) -> None:
        self._receive = receive
        self._replies = replies
        # replies=False: private transmit sockets drop all unicast in the kernel, unread.
        self._refuse = refuse_replies
        self._coalesce_delay = coalesce_delay
        self.loop: asyncio.AbstractEventLoop | None = None
        self.readers: dict[socket.socket, SocketReader] = {}

    def receiver(self, sock: socket.socket) -> None:
        portable = sock in self._receive.portable
        drain = self._receive.drain_portable if portable else self._receive.drain
        self._add(sock, drain, "a receive socket")
        self._receive.drops.watch(sock)

    def replies(self, sock: socket.socket) -> None:
        if self._refuse:
            self._replies.refuse(sock)
            return
        self._replies.prepare(sock)
        self._add(sock, self._replies.drain, "a transmit socket")
        self._receive.drops.watch(sock)

    def _add(self, sock: socket.socket, drain: Drain, what: str) -> None:
        assert self.loop is not None
        reader = SocketReader(self.loop, sock, drain, self._coalesce_delay)
        try:
            reader.start()
        except OSError as exc:
            # epoll_ctl refuses past fs.epoll.max_user_watches (ENOSPC) or memory.
            raise MulticastError(f"cannot watch {what} for reading: {exc}") from exc
        self.readers[sock] = reader

    def forget(self, sock: socket.socket) -> None:
        reader = self.readers.pop(sock, None)
        if reader is not None:
            reader.stop()
        self._receive.drops.forget(sock)
        self._replies.forget(sock)
