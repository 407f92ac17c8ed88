"""Where a datagram is read: drain a socket, build each ``Datagram``, hand the batch on.

A socket is drained up to a budget per read; every datagram of the drain goes to
each sink (subscriptions, a protocol) in one list. Datagrams that reached the
port but were not sent to the group are counted, never delivered.

Three drains do the same thing: the compiled one (:mod:`._drain`, C: ``recvmmsg``
and the ``Datagram`` values built there) where it was built; ``recvmmsg`` through
:mod:`._platform.linux.mmsg` reads up to 32 datagrams per system call where libc has it (and with
``MCASTIO_PURE=1``); plain ``recvmsg`` otherwise (and with ``MCASTIO_RECVMMSG=0``).
Both ``recvmmsg`` drains check the destination against every group of the
endpoint. The portable path (no arrival interface per datagram) reads each of its
sockets with ``recvfrom`` (:meth:`ReceivePath.drain_portable`): the socket names
the interface and group, the TTL is None. :class:`._pacing.SocketReader`
decides when a drain runs.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

from . import _drain
from ._fastpath import DATAGRAM_SLOT_SETTERS
from ._model import Datagram, Group
from ._platform.batch import mmsg as _mmsg
from ._platform.portable import ReceiveSocket
from ._platform.portable_sockets import read_datagrams
from ._recvmsg import DRAIN_BUDGET, KernelDrops, RecvmsgDrain, index_to_name

if TYPE_CHECKING:
    from ._platform.linux._cdrain import Drain as _Compiled

__all__ = ["DRAIN_BUDGET", "USE_COMPILED", "USE_RECVMMSG", "ReceivePath", "Sink"]

_log = logging.getLogger("mcastio")

Sink = Callable[[list[Datagram]], None]

# Distinct (source, control messages) blocks remembered by the recvmmsg drain.
_META_LIMIT = 4096
# What the recvmmsg drain remembers for a block not sent to the group.
_NOT_FOR_GROUP: tuple[()] = ()

# recvmmsg failing with these means the call itself is unavailable, not the socket.
_NO_RECVMMSG = (errno.ENOSYS, errno.EPERM, errno.EOPNOTSUPP)

#: Whether new endpoints read with recvmmsg; tests run both drains through this.
USE_RECVMMSG = _mmsg.available() and os.environ.get("MCASTIO_RECVMMSG", "1") != "0"

#: Whether new endpoints read with the compiled drain (with recvmmsg on); tests too.
USE_COMPILED = _drain.COMPILED


def _new_compiled(family: int) -> _Compiled:
    from ._platform.linux._cdrain import (
        Drain,
    )  # imported already: only called when _drain.cdrain is set

    # The payload room of the pure path's buffers, so both truncate alike.
    return Drain(family, Datagram, index_to_name, _mmsg.SLOT)


def _remember(
    meta: dict[bytes, tuple[object, ...]], key: bytes, info: tuple[object, ...]
) -> tuple[object, ...]:
    if len(meta) >= _META_LIMIT:
        meta.clear()
    meta[key] = info
    return info


class ReceivePath(RecvmsgDrain):
    """The receive side of one endpoint: counters, the arrival cache and the sinks."""

    def __init__(self, group: Group, port: int) -> None:
        self._group_str = str(group)
        self._port = port
        self._family = group.family
        self._groups: dict[bytes, str] = {}
        self._wire_groups: dict[str, str] = {}
        self._names: dict[int, str] = {}
        self._buffers: _mmsg.Buffers | None = None
        self._compiled: _Compiled | None = None
        try:
            if USE_RECVMMSG:
                self._buffers = _mmsg.Buffers(group.family)
            if USE_RECVMMSG and USE_COMPILED and _drain.cdrain is not None:
                self._compiled = _new_compiled(group.family)
        except OSError as exc:
            _log.warning("reading with recvmsg: no memory for recvmmsg buffers: %s", exc)
            self._buffers = None
        # Key: a source address and the control messages after it, as read;
        # value: (source, interface name, TTL), or _NOT_FOR_GROUP.
        self._meta: dict[bytes, tuple[object, ...]] = {}
        self._reply_meta: dict[bytes, tuple[object, ...]] = {}
        # The sinks in two ordered sets (subscriptions ahead of protocols), and the
        # tuple handed out per batch, rebuilt only after a change: closing n
        # subscriptions then costs O(n) instead of one O(n) rebuild per close.
        self._front: dict[Sink, None] = {}
        self._back: dict[Sink, None] = {}
        self._sinks: tuple[Sink, ...] | None = ()
        self.received = 0
        self.not_for_group = 0
        self.truncated = 0
        #: What the kernel dropped on the receive sockets.
        self.drops = KernelDrops()
        self._arrivals: dict[tuple[int, int, bytes], tuple[int, str]] = {}
        self.groups = (group,)
        #: IPv6 only: the interfaces each receive socket holds its group on. An IPv6
        #: socket gets its group's datagrams from every interface any socket joined
        #: it on (inet6_mc_check matches the address, not the interface), so a group
        #: spread over sockets, or joined by another program elsewhere, would be
        #: delivered twice or from a link not in use. None for IPv4, where the
        #: kernel matches (group, interface) itself.
        self.holds: dict[socket.socket, set[int]] | None = (
            {} if group.family == socket.AF_INET6 else None
        )
        #: The portable path's sockets (:mod:`._portablejoins`): what each one reads,
        #: since no control message names the interface there.
        self.portable: dict[socket.socket, ReceiveSocket] = {}

    @property
    def groups(self) -> tuple[str, ...]:
        """The groups whose datagrams are delivered; set by the owner."""
        return tuple(self._groups.values())

    @groups.setter
    def groups(self, groups: tuple[Group, ...]) -> None:
        # The pktinfo destination is compared as inet_ntop text (recvmsg) or packed
        # bytes (recvmmsg): either way canonical for any spelling of an IPv6 group.
        self._groups = {g.address.packed: str(g) for g in groups}
        self._wire_groups = {socket.inet_ntop(g.family, g.address.packed): str(g) for g in groups}
        if self._compiled is not None:
            self._compiled.set_groups(self._groups)
        if groups:
            self._group_str = str(groups[0])
        # What each arrival means depends on the groups: forget it all, so a group
        # just removed is never delivered from a remembered arrival.
        self._meta = {}
        self._arrivals = {}

    @property
    def fast(self) -> bool:
        """Whether this path reads with recvmmsg (compiled or through ctypes)."""
        return self._buffers is not None

    @property
    def path(self) -> str:
        """The drain in use: "compiled", "recvmmsg" (through ctypes) or "recvmsg"."""
        fast = "recvmmsg" if self._buffers is not None else "recvmsg"
        return "compiled" if self._compiled is not None and self._buffers is not None else fast

    @property
    def names(self) -> dict[int, str]:
        """Interface index -> name, for the interfaces in use; set by the owner."""
        return self._names

    @names.setter
    def names(self, names: dict[int, str]) -> None:
        self._names = names
        # The recvmmsg drains remember names with the arrival: forget them all.
        self._meta = {}
        self._reply_meta = {}
        if self._compiled is not None:
            self._compiled.set_names(names)

    @property
    def sinks(self) -> tuple[Sink, ...]:
        """Called with every batch; a tuple, so a sink added or removed while a
        batch is handed out does not disturb that loop."""
        sinks = self._sinks
        if sinks is None:
            sinks = self._sinks = self._rebuild_sinks()
        return sinks

    def _rebuild_sinks(self) -> tuple[Sink, ...]:
        return (*self._front, *self._back)

    def add_sink(self, sink: Sink, *, first: bool = False) -> None:
        (self._front if first else self._back)[sink] = None
        self._sinks = None

    def remove_sink(self, sink: Sink) -> None:
        self._front.pop(sink, None)
        self._back.pop(sink, None)
        self._sinks = None

    def clear_sinks(self) -> None:
        self._front.clear()
        self._back.clear()
        self._sinks = ()

    def drain(self, sock: socket.socket) -> int:
        """Read what ``sock`` holds (up to a budget), hand it on; the datagrams read."""
        if self._buffers is not None:
            return self._drain_recvmmsg(sock)
        return self._drain_recvmsg(sock)

    def drain_portable(self, sock: socket.socket) -> int:
        """Read a portable path socket: interface and group are the socket's, TTL None."""
        item = self.portable.get(sock)
        if item is None:
            return 0
        batch, read = read_datagrams(sock, item, DRAIN_BUDGET)
        self._hand_on(batch)
        return read

    def _drain_recvmmsg(self, sock: socket.socket) -> int:
        batch, read = self._read_fast(sock, "")
        held = None if self.holds is None else self.holds.get(sock)
        if held is not None:
            names = {self._names.get(index) for index in held}
            kept = [d for d in batch if d.interface in names]
            self.not_for_group += len(batch) - len(kept)
            batch = kept
        self._hand_on(batch)
        if self._buffers is None:
            # The kernel refused recvmmsg: read the plain way from now on.
            read += self._drain_recvmsg(sock)
        return read

    def _read_fast(self, sock: socket.socket, group: str | None) -> tuple[list[Datagram], int]:
        """Group traffic ("") or replies (None) by recvmmsg, in C where built: same results."""
        compiled, buffers = self._compiled, self._buffers
        assert buffers is not None
        if compiled is None:
            return self._read_recvmmsg(sock, buffers, group)
        batch, read, truncated, not_for_group, drops, err = compiled.read(
            sock.fileno(), group is None, DRAIN_BUDGET
        )
        self.truncated += truncated
        self.not_for_group += not_for_group
        if drops >= 0:
            self.drops.report(sock, drops)
        if err:
            self._read_failed(OSError(err, os.strerror(err)))
        return batch, read

    def _read_failed(self, exc: OSError) -> None:
        if exc.errno in _NO_RECVMMSG:
            # A sandbox may refuse the call (seccomp).
            _log.warning("reading with recvmsg: the kernel refused recvmmsg: %s", exc)
            self._buffers = None
            self._compiled = None
        else:
            # An unconnected UDP socket has no peer errors to report; log and move on.
            _log.warning("receive error on %s:%d: %s", self._group_str, self._port, exc)

    def _read_recvmmsg(
        self, sock: socket.socket, buffers: _mmsg.Buffers, group: str | None
    ) -> tuple[list[Datagram], int]:
        """Datagrams read from ``sock`` (group traffic, or replies when ``group`` is None;
        a group datagram's group is the one its destination names).

        When the kernel refuses recvmmsg this path drops its buffers (:attr:`fast`
        turns False) and returns what it read so far; the caller reads on with recvmsg.
        """
        batch: list[Datagram] = []
        append = batch.append
        fd = sock.fileno()
        memory = buffers.memory
        slots = buffers.slots
        room = buffers.name_room
        truncated = _mmsg.MSG_TRUNC
        new = object.__new__
        set_data, set_source, set_group, set_interface, set_ttl = DATAGRAM_SLOT_SETTERS
        if group is None:
            meta, learn = self._reply_meta, self._learn_reply
        else:
            meta, learn = self._meta, self._learn
        read = 0
        while read < DRAIN_BUDGET:
            try:
                count = buffers.receive(fd)
            except OSError as exc:
                self._read_failed(exc)
                break
            read += count
            for (key_at, data_at), (control_len, flags, length) in zip(
                slots, buffers.results(count), strict=False
            ):
                if flags & truncated:
                    self.truncated += 1
                    continue
                # The source and control messages repeat datagram after datagram:
                # their meaning is worked out once per distinct block.
                key = memory[key_at : key_at + room + control_len]
                info = meta.get(key)
                if info is None:
                    info = learn(sock, key, room)
                if not info:
                    self.not_for_group += 1
                    continue
                source, name, ttl, to = info
                dgram = new(Datagram)
                set_data(dgram, memory[data_at : data_at + length])
                set_source(dgram, source)
                set_group(dgram, to)
                set_interface(dgram, name)
                set_ttl(dgram, ttl)
                append(dgram)
            if count < _mmsg.BATCH:
                break
        return batch, read

    def _learn(self, sock: socket.socket, key: bytes, room: int) -> tuple[object, ...]:
        """What a (source, control messages) block means; remembered unless it holds drops."""
        drops, key = _mmsg.split_drops(key, room)
        if drops is not None:
            self.drops.report(sock, drops)
            known = self._meta.get(key)
            if known is not None:
                return known
        control = _mmsg.parse_control(key, room)
        info: tuple[object, ...] = _NOT_FOR_GROUP
        to = None if control.destination is None else self._groups.get(control.destination)
        if to is not None:
            name = self._names.get(control.ifindex) or index_to_name(control.ifindex)
            source = _mmsg.parse_sockaddr(key[:room], self._family)
            info = (source, name, control.ttl, to)
        return _remember(self._meta, key, info)

    def _learn_reply(self, sock: socket.socket, key: bytes, room: int) -> tuple[object, ...]:
        """A unicast reply is delivered when it came in on an interface in use."""
        control = _mmsg.parse_control(key, room)
        info: tuple[object, ...] = _NOT_FOR_GROUP
        name = self._names.get(control.ifindex)
        if name is not None:
            info = (_mmsg.parse_sockaddr(key[:room], self._family), name, None, None)
        return _remember(self._reply_meta, key, info)

    def read_replies(self, sock: socket.socket) -> tuple[list[Datagram], int]:
        """Unicast replies waiting on a transmit socket, with recvmmsg: (replies, read).

        Each has ``group`` None and its arrival interface; the caller hands them on.
        Only while :attr:`fast`: when the kernel refuses recvmmsg, :attr:`fast`
        turns False and the caller reads the rest the plain way.
        """
        return self._read_fast(sock, None)

    def _hand_on(self, batch: list[Datagram]) -> None:
        if batch:
            self.received += len(batch)
            for sink in self.sinks:
                sink(batch)
