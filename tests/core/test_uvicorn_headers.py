"""uvicorn's response header name check, remembered per name (http.uvicorn_headers): in place once the
protocol is made, and it refuses exactly what uvicorn's regex refuses."""

from __future__ import annotations

import re

from uvicorn.protocols.http import httptools_impl

from citadel_proxy.http import uvicorn_headers
from citadel_proxy.http.head_limits import HeadLimits
from citadel_proxy.http.uvicorn_guard import guarded_httptools
from citadel_proxy.http.uvicorn_headers import MAX_NAMES, NameCheck

_UVICORN = re.compile(b'[\x00-\x1f\x7f()<>@,;:\\[\\]={} \t\\\\"]')  # httptools_impl.HEADER_RE


def test_a_name_is_refused_exactly_when_uvicorns_pattern_refuses_it() -> None:
    check = NameCheck(_UVICORN)
    names = [b"content-type", b"x-ratelimit-remaining-requests", b"X-Conversation-ID", b"bad name",
             b"bad:name", b"bad\r\nname", b"bad\x00", b"", b"(x)", b"x-ok"]  # fmt: skip
    for _ in range(2):  # the second time, the valid names are remembered
        for name in names:
            assert (check.search(name) is None) == (_UVICORN.search(name) is None), name


def test_at_most_max_names_are_remembered_and_later_ones_are_still_checked() -> None:
    check = NameCheck(_UVICORN)
    for n in range(MAX_NAMES + 50):
        assert check.search(b"x-name-%d" % n) is None
    remembered = check.search.__self__  # type: ignore[attr-defined]
    assert len(remembered) == MAX_NAMES
    assert check.search(b"x-name-%d bad" % (MAX_NAMES + 60)) is not None
    assert check.search(b"x-later") is None and len(remembered) == MAX_NAMES


def test_installed_once_by_the_protocol_factory() -> None:
    guarded_httptools(HeadLimits(max_bytes=8192, max_headers=100, timeout_s=5.0, keep_alive_s=5))
    installed = httptools_impl.HEADER_RE
    assert isinstance(installed, NameCheck)
    assert installed.pattern.pattern == _UVICORN.pattern
    assert not uvicorn_headers.install()  # already in place: left as it is
    assert httptools_impl.HEADER_RE is installed
