"""Where a reply is read: unicast sent back to a transmit socket, e.g. answers to a query.

A request sent with ``send_all`` leaves each interface from that interface's
transmit socket, on a port of its own; a responder that answers by unicast (mDNS
legacy unicast, SSDP, WS-Discovery) sends to that port. Replies go to the same
sinks as group traffic, with ``group=None`` and the arrival interface. They are
read with recvmmsg like group traffic where the receive path has it.

Bounds: the kernel takes only unicast to this host on these sockets (broadcast is
no reply, see :mod:`._replynet`), and a reply whose source is not on the link it
arrived on is dropped and counted (``replies_off_link``): a request sent with TTL 1
is answered from that link, so such a source is spoofed (even strict rp_filter lets
it in on the default-route link). An endpoint sending with a TTL above 1 expects
routed answers and delivers them.

With ``replies=False`` a transmit socket is never read: a socket filter drops
everything in the kernel, which counts the drops (``replies_refused``). Delivered
replies are queued apart from group traffic in each subscription
(:class:`._subscription.Subscription`), so they never evict group datagrams.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable, Sequence

from . import _net
from ._model import Datagram, Interface
from ._platform.linux import ancillary as _ancillary
from ._platform.portable_sockets import read_replies
from ._receive import DRAIN_BUDGET, ReceivePath
from ._recvmsg import KernelDrops
from ._replynet import prepare_reply_socket, refuse_replies

__all__ = ["Replies"]

_log = logging.getLogger("mcastio")


class Replies:
    """Reads the transmit sockets; counts what it delivered."""

    def __init__(
        self,
        receive: ReceivePath,
        interfaces: Callable[[], Sequence[Interface]] = tuple,
        *,
        routed: bool = False,
    ) -> None:
        self._receive = receive
        self._interfaces = interfaces
        self._routed = routed
        self.count = 0
        self.off_link = 0
        # (interface name, source address) -> on that link; cleared when it grows.
        self._on_link: dict[tuple[str, str], bool] = {}
        self._links_seen: Sequence[Interface] = ()
        # The kernel's drops on sockets whose replies are refused: each one a reply.
        self._refused = KernelDrops()
        #: Portable profile: each transmit socket's interface, read without pktinfo.
        self.owners: dict[socket.socket, str] = {}

    @property
    def refused(self) -> int:
        """Replies the kernel discarded on sockets made to refuse them."""
        return self._refused.total

    def refuse(self, sock: socket.socket) -> None:
        """Take no reply on ``sock``, ever: filtered in the kernel, counted, never read."""
        try:
            refuse_replies(sock)
        except OSError as exc:
            # Unread, the socket's buffer fills once and the kernel drops the rest:
            # still nothing delivered and nothing woken, only not counted apart.
            _log.warning("a transmit socket could not refuse replies: %s", exc)
            return
        self._refused.watch(sock)

    def forget(self, sock: socket.socket) -> None:
        """``sock`` is closing: keep its refused count in the total."""
        self._refused.forget(sock)

    def prepare(self, sock: socket.socket) -> None:
        """Bound what a new transmit socket lets in (see :mod:`._replynet`)."""
        # A new transmit socket means changed interfaces: their subnets may have too.
        self._on_link.clear()
        try:
            prepare_reply_socket(sock)
        except OSError as exc:
            # Replies still work, unbounded as before: not worth failing the interface.
            _log.warning("a transmit socket keeps the kernel's reply defaults: %s", exc)

    def drain(self, sock: socket.socket) -> int:
        """Read the replies waiting on ``sock``, hand them on; the datagrams read."""
        receive = self._receive
        batch: list[Datagram] = []
        read = 0
        owner = self.owners.get(sock)
        if owner is not None:
            batch, read = read_replies(sock, owner, DRAIN_BUDGET)
        elif receive.fast:
            batch, read = receive.read_replies(sock)
        if owner is None and not receive.fast:
            more, more_read = self._read_recvmsg(sock)
            batch += more
            read += more_read
        if batch and not self._routed:
            batch = self._on_link_only(batch)
        if batch:
            self.count += len(batch)
            for sink in receive.sinks:
                sink(batch)
        return read

    def _on_link_only(self, batch: list[Datagram]) -> list[Datagram]:
        kept: list[Datagram] = []
        links = self._interfaces()
        if links != self._links_seen:
            # The verdicts hold for the interfaces as they were: one transmit socket
            # now serves every interface and outlives their changes (an address that
            # finished DAD, a new subnet), so a change of them is what clears them.
            self._links_seen = links
            self._on_link.clear()
        known = self._on_link
        for dgram in batch:
            key = (dgram.interface, dgram.source[0])
            ok = known.get(key)
            if ok is None:
                if len(known) > 4096:
                    known.clear()
                ok = known[key] = self._check(dgram.interface, dgram.source[0])
            if ok:
                kept.append(dgram)
            else:
                self.off_link += 1
        return kept

    def _check(self, ifname: str, source: str) -> bool:
        """Whether ``source`` is on ``ifname``'s link: in one of its subnets, or link-local."""
        try:
            addr = ipaddress.ip_address(source.partition("%")[0])
        except ValueError:
            return False
        if addr.is_link_local or addr.is_loopback:
            return True
        for iface in self._links_seen:
            if iface.name == ifname:
                nets = [a.network for a in (iface.ipv4 if addr.version == 4 else iface.ipv6)]
                return any(addr in net for net in nets)
        return False

    def _read_recvmsg(self, sock: socket.socket) -> tuple[list[Datagram], int]:
        receive = self._receive
        names = receive.names
        batch: list[Datagram] = []
        read = 0
        # As many per readiness event as the receive path drains: replies share its sinks.
        while read < DRAIN_BUDGET:
            try:
                data, anc, flags, source = sock.recvmsg(_net.RECV_BUFSIZE, _net.ANC_BUFSIZE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                _log.warning("receive error on a transmit socket: %s", exc)
                break
            read += 1
            if flags & _net.MSG_TRUNC:
                receive.truncated += 1
                continue
            info = _ancillary.parse_pktinfo(anc)
            name = names.get(info[0]) if info is not None else None
            if name is None:
                # From a link the endpoint does not use (possible only where the socket
                # could not be bound to its device): not delivered.
                receive.not_for_group += 1
                continue
            batch.append(Datagram(data, source, None, name))
        return batch, read
