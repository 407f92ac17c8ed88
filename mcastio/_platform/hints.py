"""What to tell a user when a send fails for a reason the errno does not name.

macOS 15 added Local Network Privacy: a program the user has not allowed onto
the local network has its sends there (multicast included) refused with
EHOSTUNREACH, "No route to host", although the route is there. Apple says the
errno cannot be more specific (DTS in developer.apple.com/forums/thread/765285,
where ``sendto`` fails this way "immediately ... on the first execution of any
app that calls it", while the permission prompt is still on screen). TN3179,
"Understanding local network privacy", lists who is exempt: daemons started by
launchd, programs running as root, and command-line tools run from Terminal or
over SSH with their children; anything else, an IDE's terminal included, needs
the user's yes in System Settings > Privacy & Security > Local Network.

Nothing here sends or reads the clock: the caller passes the platform, the
errno, the macOS release and whether it has hinted already.
"""

from __future__ import annotations

from . import darwin

__all__ = ["LOCAL_NETWORK_HINT", "local_network_hint"]

#: The hint, said once: after it the errno speaks for itself again.
LOCAL_NETWORK_HINT = (
    "on macOS 15 and later this is what Local Network Privacy does to a program "
    "not yet allowed onto the local network: allow the app that runs it (your "
    "app, IDE or terminal) in System Settings > Privacy & Security > Local "
    "Network, then send again; root, launchd daemons and tools run from Terminal "
    "or ssh are exempt (Apple TN3179)"
)


def _major(release: str) -> int | None:
    head = release.split(".", 1)[0]
    # str.isdigit is true for "²", which int() refuses: only ASCII digits are a release.
    return int(head) if head.isascii() and head.isdigit() else None


def local_network_hint(
    platform: str, error: int | None, *, release: str, hinted: bool
) -> str | None:
    """The Local Network Privacy hint for a failed send, or None when it does not apply.

    ``platform`` is :func:`mcastio._platform.platform_name` of ``sys.platform``;
    ``error`` the send's ``OSError.errno``; ``release`` ``platform.mac_ver()[0]``
    ("15.1"; "" when unknown); ``hinted`` whether this process said it already.
    It applies to macOS's EHOSTUNREACH (65 there, 113 on Linux) from macOS 15 on,
    or when the release is unknown; before 15 the errno means what it says.
    """
    if hinted or platform != "darwin" or error != darwin.EHOSTUNREACH:
        return None
    major = _major(release)
    if major is not None and major < darwin.LOCAL_NETWORK_PRIVACY_SINCE:
        return None
    return LOCAL_NETWORK_HINT
