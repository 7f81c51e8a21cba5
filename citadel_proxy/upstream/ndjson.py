"""Ollama's NDJSON stream as typed deltas: lines split across reads, long lines, errors, early EOF."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

import aiohttp
import msgspec

from citadel_proxy import errors
from citadel_proxy.pipeline.types import Delta, Outcome
from citadel_proxy.upstream.lean import LeanError, LeanResponse
from citadel_proxy.upstream.wire import ChatLine, GenerateLine

# An answer from either client: aiohttp's response or the lean one (the same few methods).
Answer = aiohttp.ClientResponse | LeanResponse

Line = TypeVar("Line", ChatLine, GenerateLine)

# For pull progress; chat and generate lines are held to ollama.service.max_line_bytes.
MAX_LINE_BYTES = 4 * 1024 * 1024


class ByteSource(Protocol):
    async def readany(self) -> bytes: ...


_DRAIN_AFTER_DONE_S = 1.0


class LineBlocks:
    """Whole lines from a byte stream, as many as have arrived per call, without aiohttp's line limit."""

    __slots__ = ("_carry", "_content", "_max_line_bytes")

    def __init__(self, content: ByteSource, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self._content = content
        self._carry = bytearray()
        self._max_line_bytes = max_line_bytes

    async def read(self) -> bytes | None:
        """One or more complete lines, or None at EOF. Cancel-safe: state changes only after a read."""
        while True:
            data = await self._content.readany()
            block = self.take(data) if data else self.rest()
            if block is not None or not data:
                return block

    def take(self, data: bytes) -> bytes | None:
        """The complete lines that `data` finishes (None if it finishes none); the rest is carried."""
        end = data.rfind(b"\n")
        if end < 0:
            self._carry += data
            if len(self._carry) > self._max_line_bytes:
                # Let go of it now: a stream that failed may wait for its client before it is closed.
                self._carry = bytearray()
                raise self._too_long()
            return None
        # The usual read ends on a line end with nothing carried: no copy and no new buffer.
        if self._carry:
            self._carry += data[: end + 1]
            block = bytes(self._carry)
            self._carry.clear()
        else:
            block = data if end + 1 == len(data) else data[: end + 1]
        if end + 1 < len(data):
            self._carry += data[end + 1 :]
        # A long line that arrived in one read is only found here; lines are split only for a block
        # that could hold one.
        if len(block) > self._max_line_bytes and max(map(len, block.split(b"\n"))) > self._max_line_bytes:
            self._carry = bytearray()
            raise self._too_long()
        return block

    def _too_long(self) -> errors.UpstreamTooLarge:
        return errors.UpstreamTooLarge(f"Ollama sent a line longer than {self._max_line_bytes} bytes")

    def rest(self) -> bytes | None:
        """At EOF: a last line without its newline, if any."""
        if self._carry.strip():
            rest, self._carry = bytes(self._carry), bytearray()
            return rest
        return None


class UpstreamStream(Generic[Line]):
    """The TokenStream of one Ollama answer: a batch of deltas per read, outcome recorded at `done`."""

    __slots__ = ("_blocks", "_content", "_decoder", "_done", "_failure", "_outcome", "_response", "_to_delta")

    def __init__(
        self,
        response: Answer,
        decoder: msgspec.json.Decoder[Line],
        to_delta: Callable[[Line], Delta | None],
        outcome: Outcome,
        max_line_bytes: int = MAX_LINE_BYTES,
    ) -> None:
        self._response = response
        self._content: ByteSource = response.content
        self._blocks = LineBlocks(response.content, max_line_bytes)
        self._decoder: msgspec.json.Decoder[Line] = decoder
        self._to_delta: Callable[[Line], Delta | None] = to_delta
        self._outcome = outcome
        self._done = False
        self._failure: errors.GatewayError | None = None

    async def read(self) -> list[Delta] | None:
        # The bytes are read here rather than through LineBlocks.read: one coroutine less per read and
        # per open stream, on the path every token takes.
        content, blocks = self._content, self._blocks
        while True:
            if self._failure is not None:
                raise self._failure
            if self._done:
                return None
            try:
                data = await content.readany()
            except LeanError as exc:
                if exc.silent:
                    raise errors.UpstreamTimeout(f"Ollama's stream stopped: {exc}") from None
                raise errors.UpstreamIncomplete(f"Ollama's stream broke off: {exc!r}") from None
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise errors.UpstreamIncomplete(f"Ollama's stream broke off: {exc!r}") from None
            block = blocks.take(data) if data else blocks.rest()
            if block is None:
                if data:
                    continue  # part of a line: read on
                raise errors.UpstreamIncomplete("Ollama ended the stream before it was complete")
            deltas = self._take(self._decode(block))
            if deltas:
                outcome = self._outcome
                if outcome.first_token_at is None:
                    outcome.first_token_at = time.perf_counter()
                # One line carries one token: the count so far, for an answer that never reaches its
                # last line (client gone, deadline, error); Ollama's own count replaces it at the end.
                if not self._done:
                    outcome.completion_tokens += len(deltas)
                return deltas

    def _decode(self, block: bytes) -> list[Line]:
        try:
            lines: list[Line] = self._decoder.decode_lines(block)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
            raise errors.UpstreamMalformed(f"Ollama sent a line that is not valid: {exc}") from None
        return lines

    def _take(self, lines: list[Line]) -> list[Delta]:
        deltas = []
        to_delta = self._to_delta
        for line in lines:
            if line.error is not None:
                # Deltas before the error still go out; the error is raised on the next read.
                self._failure = errors.UpstreamError(f"Ollama failed mid-stream: {line.error}")
                break
            delta = to_delta(line)
            if delta is not None:
                deltas.append(delta)
            if line.done:
                self._finish(line)
                break
        return deltas

    def _finish(self, line: Line) -> None:
        self._done = True
        outcome = self._outcome
        outcome.finish_reason = line.done_reason or None
        outcome.prompt_tokens = line.prompt_eval_count
        outcome.completion_tokens = line.eval_count
        outcome.finished_at = time.perf_counter()

    async def aclose(self) -> None:
        """Give the connection back: reusable when Ollama finished, closed (so it stops generating) if not."""
        response = self._response
        if self._done and not response.content.is_eof():
            try:
                async with asyncio.timeout(_DRAIN_AFTER_DONE_S):
                    while await response.content.readany():
                        pass
            except (aiohttp.ClientError, LeanError, TimeoutError):
                response.close()
        if not self._done:
            response.close()
        response.release()


def chat_delta(line: ChatLine) -> Delta | None:
    message = line.message
    if message is None or not (message.content or message.thinking or message.tool_calls):
        return None
    return message


def generate_delta(line: GenerateLine) -> Delta | None:
    if not (line.response or line.thinking or line.tool_calls):
        return None
    return Delta(line.response, line.thinking, line.tool_calls)


chat_line_decoder = msgspec.json.Decoder(ChatLine)
generate_line_decoder = msgspec.json.Decoder(GenerateLine)
