"""What a streaming protocol brings to the stream writer: its events, its trailer, its errors and headers.

Each client protocol (OpenAI's SSE chunks, Ollama's NDJSON lines, Anthropic's SSE events) has its own
encoder; `http.stream_response.StreamResponse` writes whatever the encoder gives it and knows no format.
"""

from __future__ import annotations

from typing import Protocol

from citadel_proxy.errors import GatewayError
from citadel_proxy.pipeline.types import Delta, Outcome

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
NDJSON_HEADERS = [
    (b"content-type", b"application/x-ndjson"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class StreamEncoder(Protocol):
    # The response's content type and cache headers.
    headers: list[tuple[bytes, bytes]]
    # Written while the upstream is silent (a model loading); empty: the headers alone, for formats
    # whose readers take every line as an event.
    keepalive: bytes

    def encode(self, batch: list[Delta]) -> bytes: ...

    def trailer(self, outcome: Outcome, include_usage: bool) -> bytes: ...

    def error_event(self, error: GatewayError) -> bytes:
        """An error once the stream is open (the HTTP status is already sent)."""
        ...

    def error_body(self, error: GatewayError) -> bytes:
        """An error before the stream opened: the JSON body of an answer with the error's status."""
        ...
