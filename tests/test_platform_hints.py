"""The Local Network Privacy hint (macOS 15+): when it is given, and when not."""

from __future__ import annotations

import errno

from hypothesis import given
from hypothesis import strategies as st

from mcastio._platform import darwin
from mcastio._platform.hints import LOCAL_NETWORK_HINT, local_network_hint

PLATFORMS = st.sampled_from(["darwin", "linux", "freebsd", "windows", "sunos5"])
RELEASES = st.one_of(
    st.just(""),
    st.builds(lambda a, b: f"{a}.{b}", st.integers(0, 40), st.integers(0, 9)),
    st.text(max_size=6),
)


def test_macos_ehostunreach_from_15_on_or_unknown_gets_the_hint() -> None:
    for release in ("15.0", "15.1.1", "26.2", ""):
        assert local_network_hint("darwin", 65, release=release, hinted=False) == (
            LOCAL_NETWORK_HINT
        )


def test_no_hint_before_15_or_once_given() -> None:
    # Before macOS 15 there is no Local Network Privacy: no route means no route.
    assert local_network_hint("darwin", 65, release="14.7", hinted=False) is None
    assert local_network_hint("darwin", 65, release="15.0", hinted=True) is None


def test_the_number_is_macos_own() -> None:
    # Linux's EHOSTUNREACH is 113: a check against the host's errno module would
    # never fire on macOS when written here, or fire for the wrong number.
    assert darwin.EHOSTUNREACH == 65 != errno.EHOSTUNREACH
    assert local_network_hint("darwin", errno.EHOSTUNREACH, release="15.0", hinted=False) is None
    assert local_network_hint("linux", 65, release="", hinted=False) is None


@given(PLATFORMS, st.one_of(st.none(), st.integers(0, 200)), RELEASES, st.booleans())
def test_the_hint_is_given_exactly_when_it_applies(
    platform: str, error: int | None, release: str, hinted: bool
) -> None:
    hint = local_network_hint(platform, error, release=release, hinted=hinted)
    head = release.split(".", 1)[0]
    old = head.isascii() and head.isdigit() and int(head) < 15
    applies = platform == "darwin" and error == 65 and not hinted and not old
    assert hint == (LOCAL_NETWORK_HINT if applies else None)


def test_the_hint_says_where_to_allow_it() -> None:
    assert "System Settings > Privacy & Security > Local Network" in LOCAL_NETWORK_HINT
    assert "TN3179" in LOCAL_NETWORK_HINT
