"""Request ids: taken from `X-Request-ID` when well formed, minted otherwise, returned on every response.

http.front sets the id in `scope["state"]["request_id"]` (handlers read `request.state.request_id`).
"""

from __future__ import annotations

import re

from citadel_proxy.entropy import random_bytes

HEADER = b"x-request-id"
# Client ids end up in logs and headers: a bounded alphabet keeps them from forging log lines or headers.
_VALID = re.compile(rb"[A-Za-z0-9._-]{1,128}")


def new_request_id() -> str:
    return random_bytes(12).hex()


def request_id_from(headers: list[tuple[bytes, bytes]]) -> str:
    """The client's id when it is acceptable, else a new one."""
    for name, value in headers:
        if name == HEADER:
            if _VALID.fullmatch(value):
                return value.decode("ascii")
            break
    return new_request_id()
