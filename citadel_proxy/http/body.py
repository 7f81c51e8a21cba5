"""Reading a request body within the configured limit and decoding it into a typed struct."""

from __future__ import annotations

import re
from typing import TypeVar

import msgspec
from starlette.requests import Request

from citadel_proxy import errors
from citadel_proxy.http.json_depth import too_deep
from citadel_proxy.memory import MMAP_THRESHOLD_BYTES as TRIM_AFTER_BYTES

T = TypeVar("T")

_AT = re.compile(r"^(?P<msg>.*?) - at `\$\.?(?P<path>[^`]*)`$", re.S)


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise errors.PayloadTooLarge(f"request body is larger than {limit} bytes")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise errors.PayloadTooLarge(f"request body is larger than {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    # Neither the pieces nor a stripped copy are kept beside the body: each would be one more body's size.
    chunks.clear()
    if size >= TRIM_AFTER_BYTES:
        request.state.trim_after = True  # http.front trims the heap once the response is done
    if not body or body.isspace():
        raise errors.InvalidRequest("request body is empty: send a JSON object")
    return body


def decode(body: bytes, decoder: msgspec.json.Decoder[T]) -> T:
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        found = _AT.match(str(exc))
        if found is None:
            raise errors.InvalidRequest(f"invalid request: {exc}") from None
        path = found.group("path") or None
        message = found.group("msg")
        message = message[:1].lower() + message[1:]
        raise errors.InvalidRequest(f"{path}: {message}" if path else message, param=path) from None
    except msgspec.DecodeError as exc:
        raise errors.InvalidJSON(f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        # Nesting deeper than Python's recursion limit, anywhere (unknown fields are skipped recursively).
        raise too_deep(None) from None
