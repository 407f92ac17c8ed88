"""The keepers' one beacon per loop: what it names, and that it follows the groups."""

from __future__ import annotations

import asyncio
import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from mcastio._beacons import Beacon, beacon_detail, beacon_groups
from mcastio._keeper import beacon_name, parse_beacons

groups = st.sets(
    st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)).map(str), min_size=1, max_size=300
)


@given(groups)
def test_a_detail_fits_a_name_and_counts_every_group(kept: set[str]) -> None:
    detail = beacon_detail(kept)
    name = beacon_name("keepalive", detail, 4_194_304, 999_999)
    assert len(name.encode()) <= 107  # sun_path minus the abstract name's NUL
    shown, more = beacon_groups(detail)
    assert shown  # one group always fits
    assert list(shown) == sorted(kept)[: len(shown)]
    assert len(shown) + more == len(kept)
    # What /proc/net/unix shows, doctor parses back.
    line = f"0000: 00000002 00000000 00000000 0002 01 12345 @{name}"
    assert parse_beacons("header\n" + line) == (("keepalive", detail),)


def test_the_beacon_follows_the_groups_at_once() -> None:
    async def main() -> list[str | None]:
        beacon = Beacon(asyncio.get_running_loop())
        seen: list[str | None] = []
        for i in range(100):
            beacon.add(str(ipaddress.IPv4Address("239.1.0.0") + i))
        beacon.add("239.1.0.0")  # a second keeper of one group: counted, not named twice
        seen.append(beacon.name)
        for i in range(100):
            beacon.remove(str(ipaddress.IPv4Address("239.1.0.0") + i))
        seen.append(beacon.name)
        beacon.remove("239.1.0.0")
        seen.append(beacon.name)
        beacon.close()
        return seen

    many, one, none = asyncio.run(main())
    assert many is not None
    assert beacon_groups(many.split("/")[2])[1] + len(beacon_groups(many.split("/")[2])[0]) == 100
    assert one is not None
    assert one.split("/")[2] == "239.1.0.0"
    assert none is None
