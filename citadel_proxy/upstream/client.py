"""The one aiohttp session a worker keeps to Ollama, with retries and Ollama's errors translated."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
import msgspec

from citadel_proxy import errors
from citadel_proxy.config.schema import OllamaService
from citadel_proxy.upstream.lean import LeanError, LeanPool, LeanResponse
from citadel_proxy.upstream.ndjson import Answer
from citadel_proxy.upstream.wire import ErrorReply

_JSON = {"Content-Type": "application/json"}
_error_decoder = msgspec.json.Decoder(ErrorReply)
_MAX_ERROR_BODY = 64 * 1024
_RETRY_BASE_S = 0.05
# What aiohttp buffers per response before it stops reading the socket (it pauses at twice this). A
# streamed answer is read as it arrives, so a small buffer only matters for a client that reads slower
# than Ollama writes: it bounds the memory that client costs (32 KiB instead of aiohttp's 128 KiB).
# Whole answers (fetch) are read at once and keep aiohttp's default, which costs fewer pauses.
_STREAM_BUFSIZE = 16 * 1024
_WHOLE_BUFSIZE = 64 * 1024

# Told of every exchange's reachability: (True, "") when Ollama answered 200, (False, why) when it could
# not be reached. Other statuses say nothing either way.
ReachabilityObserver = Callable[[bool, str], None]


def _ignore(_up: bool, _why: str) -> None:
    pass


class OllamaClient:
    """Owns the connection pool to Ollama. Created and closed by the app's lifespan."""

    def __init__(self, service: OllamaService, on_reachable: ReachabilityObserver = _ignore) -> None:
        self.service = service
        self._on_reachable = on_reachable
        self._session: aiohttp.ClientSession | None = None
        self._lean: LeanPool | None = None

    async def open(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self.service.max_connections, keepalive_timeout=75, ttl_dns_cache=300
        )
        # total=None: a generation may run for an hour; sock_read bounds Ollama's silence instead.
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self.service.connect_timeout_s, sock_read=self.service.timeout
        )
        self._session = aiohttp.ClientSession(
            base_url=self.service.base_url,
            connector=connector,
            timeout=timeout,
            skip_auto_headers=("User-Agent",),
            auto_decompress=False,
        )
        if self.service.scheme == "http":
            self._lean = LeanPool(
                self.service.host,
                self.service.port,
                limit=self.service.max_connections,
                connect_timeout_s=self.service.connect_timeout_s,
                read_timeout_s=self.service.timeout,
            )

    async def close(self) -> None:
        if self._lean is not None:
            await self._lean.close()
            self._lean = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def stream(self, path: str, body: bytes, headers: Mapping[str, str] | None = None) -> Answer:
        """Ollama's streamed answer to a POST, status 200, unread (other statuses raise).

        Streams go through the lean client (less memory and CPU per token); only connect failures are
        retried, since then nothing has reached Ollama. `headers`: extra ones (a trace's traceparent).
        """
        if self._lean is None:
            return await self.open_response("POST", path, body, read_bufsize=_STREAM_BUFSIZE, headers=headers)
        return await self._lean_post(self._lean, path, body, headers)

    async def post(self, path: str, body: bytes, headers: Mapping[str, str] | None = None) -> bytes:
        """A whole answer to a POST (chat, generate and embeddings without streaming), read on the lean
        client like streams: aiohttp's request machinery was most of the CPU such a request cost."""
        if self._lean is None:
            return await self.fetch("POST", path, body, headers=headers)
        response = await self._lean_post(self._lean, path, body, headers)
        try:
            return await response.read_all(self.service.max_answer_bytes)
        except LeanError as exc:
            if exc.too_large:
                raise errors.UpstreamTooLarge(str(exc)) from None
            if exc.silent:
                raise errors.UpstreamTimeout(f"Ollama's answer stopped: {exc}") from None
            raise errors.UpstreamIncomplete(f"Ollama's answer was cut off: {exc}") from None
        finally:
            response.release()

    async def _lean_post(
        self, lean: LeanPool, path: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> LeanResponse:
        attempts = self.service.max_retries + 1
        extra = b"" if headers is None else "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode()
        for attempt in range(attempts):
            try:
                response = await lean.post(path, body, extra)
                break
            except OSError as exc:  # TimeoutError included: connecting took too long
                if attempt + 1 == attempts:
                    raise self._cannot_connect(errors.reason(exc)) from None
                await _backoff(attempt)
            except LeanError as exc:
                if exc.silent:
                    raise errors.UpstreamTimeout(f"request to Ollama failed: {exc}") from None
                raise errors.UpstreamError(f"request to Ollama failed: {exc}") from None
        if response.status != 200:
            raise await _status_error(response)
        self._on_reachable(True, "")
        return response

    def _cannot_connect(self, why: object) -> errors.UpstreamUnavailable:
        # The client is told that Ollama is unreachable, not where it lives: the address and the system's
        # reason go to the operator (the health watch logs them; /health shows them to an admin key).
        error = errors.UpstreamUnavailable("cannot connect to Ollama; try again later")
        error.detail = f"cannot connect to Ollama at {self.service.base_url}: {why}"
        self._on_reachable(False, error.detail)
        return error

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("OllamaClient used before open()")
        return self._session

    async def open_response(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        *,
        total_s: float | None = None,
        read_bufsize: int = _STREAM_BUFSIZE,
        headers: Mapping[str, str] | None = None,
    ) -> aiohttp.ClientResponse:
        """Send a request and return Ollama's 200 response unread; any other status raises.

        Only failures to connect are retried: nothing has reached Ollama, so nothing can run twice.
        """
        attempts = self.service.max_retries + 1
        kwargs: dict[str, Any] = {
            "data": body,
            "headers": _JSON if body is not None else None,
            "read_bufsize": read_bufsize,
        }
        if headers:
            kwargs["headers"] = {**(kwargs["headers"] or {}), **headers}
        if total_s is not None:
            kwargs["timeout"] = aiohttp.ClientTimeout(total=total_s)
        for attempt in range(attempts):
            try:
                response = await self.session.request(method, path, **kwargs)
                break
            except aiohttp.ClientConnectorError as exc:
                if attempt + 1 == attempts:
                    raise self._cannot_connect(exc.os_error or exc) from None
                await _backoff(attempt)
            except aiohttp.ServerDisconnectedError:
                # A pooled keep-alive connection Ollama had closed: the request never reached it.
                if attempt + 1 == attempts:
                    raise errors.UpstreamUnavailable("Ollama closed the connection") from None
            except TimeoutError:
                raise errors.UpstreamTimeout("Ollama did not answer in time") from None
            except aiohttp.ClientError as exc:
                raise errors.UpstreamError(f"request to Ollama failed: {exc}") from None
        if response.status != 200:
            raise await _status_error(response)
        self._on_reachable(True, "")
        return response

    async def fetch(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        *,
        total_s: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> bytes:
        """A whole (non-streamed) answer body."""
        response = await self.open_response(
            method, path, body, total_s=total_s, read_bufsize=_WHOLE_BUFSIZE, headers=headers
        )
        try:
            return await _read_capped(response, self.service.max_answer_bytes)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise errors.UpstreamIncomplete(f"Ollama's answer was cut off: {exc}") from None
        finally:
            response.release()


async def _read_capped(response: aiohttp.ClientResponse, limit: int) -> bytes:
    out = bytearray()
    while chunk := await response.content.readany():
        out += chunk
        if len(out) > limit:
            response.close()
            raise errors.UpstreamTooLarge(f"Ollama's answer is longer than {limit} bytes")
    return bytes(out)


async def _backoff(attempt: int) -> None:
    """Before retrying a connection that failed (nothing reached Ollama, so nothing runs twice)."""
    await asyncio.sleep(_RETRY_BASE_S * 2**attempt)


async def _status_error(response: Answer) -> errors.GatewayError:
    status = response.status  # before release(): a pooled lean response is reset for its next use
    try:
        raw = await response.content.read(_MAX_ERROR_BODY)
    except (aiohttp.ClientError, LeanError, TimeoutError):
        raw = b""
    finally:
        response.release()
    message = _error_text(raw)
    if status == 404:
        return errors.ModelNotFound(message or "not found in Ollama")
    if status == 400:
        return errors.InvalidRequest(f"Ollama refused the request: {message}", code="upstream_bad_request")
    if status == 403:
        return errors.UpstreamError(
            "Ollama refused the request (403): check its OLLAMA_ORIGINS and OLLAMA_HOST settings",
            code="upstream_forbidden",
        )
    if status == 429:
        return errors.RateLimited(f"Ollama is rate limiting: {message}", code="upstream_rate_limited")
    if status == 503:
        return errors.ServiceUnavailable(f"Ollama is busy: {message}", code="upstream_busy")
    return errors.UpstreamError(f"Ollama failed ({status}): {message or 'no details'}")


def _error_text(raw: bytes) -> str:
    try:
        return _error_decoder.decode(raw).error
    except msgspec.DecodeError:
        return raw.decode("utf-8", "replace").strip()[:500]
