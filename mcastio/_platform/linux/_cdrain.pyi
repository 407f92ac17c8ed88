# Types of the optional C extension built from _cdrain.c (see _drain.py).
from collections.abc import Callable, Sequence
from typing import Any

from ..._model import Datagram

BATCH: int
SLOT: int
MAX_SEND: int

class Drain:
    def __init__(
        self,
        family: int,
        datagram_type: type[Datagram],
        index_to_name: Callable[[int], str],
        slot: int = ...,
    ) -> None: ...
    def read(
        self, fd: int, reply: bool, budget: int, /
    ) -> tuple[list[Datagram], int, int, int, int, int]: ...
    def set_groups(self, groups: dict[bytes, str], /) -> None: ...
    def set_names(self, names: dict[int, str], /) -> None: ...

def send_many(
    fd: int, payloads: Sequence[Any], address: bytes, segment: int, control: bytes = ..., /
) -> int: ...
def send_each(
    fd: int, data: Any, address: bytes, controls: tuple[bytes, ...], /
) -> tuple[int, ...]: ...
