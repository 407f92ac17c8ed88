"""Links whose sends the kernel refuses: reported once, then left out of send_all.

A mixin of :class:`._transmit.TransmitPool`. A link that refuses sends
(:func:`._net.is_link_refusal`: no route, no address, a firewall) would otherwise
fail every ``send_all`` the same way; it is parked until the interface changes
(:meth:`PoolRefusals.retry`, called by the owner's watcher). macOS's Local Network
Privacy refusal is the exception: the user's yes ends it, and no watcher sees that.
"""

from __future__ import annotations

import logging
import platform
import sys

from ._platform import platform_name
from ._platform.hints import local_network_hint
from ._poolsends import Sender

__all__ = ["PoolRefusals"]

_log = logging.getLogger("mcastio")


class _Said:
    #: Whether this process gave the Local Network Privacy hint (once is enough).
    privacy_hint = False


def _local_network_refusal(exc: OSError, ifname: str, dest: tuple[str, int]) -> bool:
    """Whether ``exc`` is macOS's Local Network Privacy refusing sends; hinted once."""
    hint = local_network_hint(
        platform_name(sys.platform), exc.errno, release=_mac_release(), hinted=False
    )
    if hint is None:
        return False
    if not _Said.privacy_hint:
        _Said.privacy_hint = True
        _log.warning("sends to %s:%d on %s fail (%s): %s", *dest, ifname, exc.strerror, hint)
    return True


def _mac_release() -> str:
    return platform.mac_ver()[0] if sys.platform == "darwin" else ""


class PoolRefusals:
    """The parked links of one pool: out of send_all until they change."""

    _senders: dict[int, Sender]
    _parked: dict[int, tuple[Sender, OSError]]
    _to_park: list[tuple[Sender, OSError]]
    _controls: tuple[bytes, ...] | None

    @property
    def refused(self) -> dict[str, OSError]:
        """Interfaces left out of ``send_all`` because their sends were refused, and why."""
        return {sender.iface.name: error for sender, error in self._parked.values()}

    def retry(self, index: int) -> None:
        """The interface changed: send on it again if its sends were refused."""
        parked = self._parked.pop(index, None)
        if parked is not None:
            self._senders[index] = parked[0]
            self._controls = None
            _log.info("trying %s again: it changed", parked[0].iface.name)

    def _park(self, dest: tuple[str, int]) -> None:
        """Leave out the links just refused, each reported once (here and in its result)."""
        self._controls = None
        for sender, exc in self._to_park:
            index = sender.iface.index
            if _local_network_refusal(exc, sender.iface.name, dest):
                # Stays in send_all: the user's yes ends it, and no watcher sees that.
                continue
            if self._senders.get(index) is sender:
                del self._senders[index]
                self._parked[index] = (sender, exc)
                _log.warning(
                    "sends to %s:%d on %s fail (%s); leaving %s out until it changes",
                    dest[0],
                    dest[1],
                    sender.iface.name,
                    exc.strerror or exc,
                    sender.iface.name,
                )
        self._to_park.clear()
