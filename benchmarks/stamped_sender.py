"""Send timestamped datagrams at a steady rate: ``GROUP PORT SOURCE_ADDR RATE SECONDS [BURST]``.

With ``BURST`` > 1 the same average rate goes out in bursts of that many
datagrams back to back (each stamped when it is sent).

Run in a peer namespace of the lab. Each 64-byte payload starts with the
``CLOCK_MONOTONIC`` time of its ``sendto`` in nanoseconds (big-endian), which the
receivers in ``receivers.py`` compare with their own clock: namespaces share it.
Prints ``Sent N datagrams`` like iperf.
"""

from __future__ import annotations

import socket
import struct
import sys
import time


def main(group: str, port: int, source: str, rate: int, seconds: float, burst: int = 1) -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(source))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
    pack = struct.Struct("!Q").pack
    pad = b"\0" * 56
    gap = 1e9 / rate * burst
    total = int(rate * seconds) // burst * burst
    start = time.monotonic_ns()
    for n in range(total):
        due = start + (n // burst) * gap
        ahead = due - time.monotonic_ns()
        if ahead > 200_000:
            time.sleep((ahead - 100_000) / 1e9)
        # The last stretch is spun, so datagrams leave on time, evenly spaced.
        while time.monotonic_ns() < due:
            pass
        sock.sendto(pack(time.monotonic_ns()) + pad, (group, port))
    sock.close()
    print(f"Sent {total} datagrams", flush=True)
    return 0


if __name__ == "__main__":
    group, port, source, rate, seconds = sys.argv[1:6]
    burst = int(sys.argv[6]) if len(sys.argv) > 6 else 1
    sys.exit(main(group, int(port), source, int(rate), float(seconds), burst))
