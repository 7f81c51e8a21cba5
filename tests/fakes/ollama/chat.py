"""Chat and generate routes: checks, behaviour choice, streamed and stream:false answers (1-3, 8.3, 10.2)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from aiohttp import web

from .behavior import StreamRecord
from .generation import _Generation, _Step, split_bytes
from .models import FakeModel
from .state import ServerState
from .wire import (
    _JSON,
    _NDJSON,
    ApiError,
    created_at,
    decode_body,
    go_json,
    json_response,
    parse_keep_alive,
    request_stream,
    text_response,
)

_THINK_LEVELS = ("low", "medium", "high", "max")


class _PeerGone(Exception):
    """The client's transport is closing: stop writing."""


class ChatRoutes(ServerState):
    """Route handlers of /api/chat and /api/generate."""

    async def _chat(self, request: web.Request, raw: bytes) -> web.StreamResponse:
        req = decode_body(raw, "ChatRequest")
        keep_alive = parse_keep_alive(req.get("keep_alive"))
        name = req.get("model") or ""
        if not name:
            raise ApiError(400, "model is required")
        model = self._lookup(name)
        if "completion" not in model.capabilities:
            raise ApiError(400, f"{json.dumps(name)} does not support chat")
        if req.get("tools") and "tools" not in model.capabilities:
            raise ApiError(400, f"{name} does not support tools")
        self._check_options(req, name, model)
        if not req.get("messages"):
            return self._load_only("chat", name, model, keep_alive)
        return await self._run(request, "chat", req, model, keep_alive)

    async def _generate(self, request: web.Request, raw: bytes) -> web.StreamResponse:
        req = decode_body(raw, "GenerateRequest")
        keep_alive = parse_keep_alive(req.get("keep_alive"))
        name = req.get("model") or ""
        if not name:
            raise ApiError(404, "model '' not found")
        if req.get("raw") and (req.get("template") or req.get("system") or req.get("context")):
            raise ApiError(400, "raw mode does not support template, system, or context")
        model = self._lookup(name)
        if "completion" not in model.capabilities:
            raise ApiError(400, f"{json.dumps(name)} does not support generate")
        if req.get("suffix") and "insert" not in model.capabilities:
            raise ApiError(400, f"{model.name} does not support insert")
        self._check_options(req, name, model)
        if not req.get("prompt") and not req.get("images"):
            return self._load_only("generate", name, model, keep_alive)
        return await self._run(request, "generate", req, model, keep_alive)

    @staticmethod
    def _check_options(req: dict[str, Any], name: str, model: FakeModel) -> None:
        think = req.get("think")
        if (isinstance(think, str) and think not in _THINK_LEVELS) or not isinstance(
            think, bool | str | None
        ):
            raise ApiError(400, f"invalid think value: {json.dumps(think)}")
        if think not in (None, False) and "thinking" not in model.capabilities:
            raise ApiError(400, f"{json.dumps(name)} does not support thinking")
        top = req.get("top_logprobs")
        if isinstance(top, int) and not 0 <= top <= 20:
            raise ApiError(400, "top_logprobs must be between 0 and 20")

    def _load_only(self, kind: str, name: str, model: FakeModel, keep_alive: float | None) -> web.Response:
        """Sections 1.5 / 2.4: one application/json object even when stream is true."""
        reason = "unload" if keep_alive == 0 else "load"
        self._touch(model, keep_alive)
        obj: dict[str, Any] = {"model": name, "created_at": created_at()}
        if kind == "chat":
            obj.update(message={"role": "assistant", "content": ""}, done_reason=reason, done=True)
        else:
            obj.update(response="", done=True, done_reason=reason)
        return json_response(200, obj)

    async def _run(
        self, request: web.Request, kind: str, req: dict[str, Any], model: FakeModel, keep_alive: float | None
    ) -> web.StreamResponse:
        behavior = self._pick(model)
        record = StreamRecord(path=request.path, model=req["model"], stream=request_stream(req))
        self.streams.append(record)
        self._stream_added.set()
        gen = _Generation(kind, req, model, behavior, cold=model.name not in self.loaded)
        self._touch(model, keep_alive if keep_alive != 0 else None)
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            if behavior.error_status is not None:
                await asyncio.sleep(behavior.first_token_delay_s)
                body = behavior.error_body
                if body is None:
                    body = {"error": behavior.error_message}
                record.outcome = "error_status"
                if isinstance(body, str):
                    return text_response(behavior.error_status, body, _JSON)
                return json_response(behavior.error_status, body)
            if record.stream:
                return await self._stream(request, gen, record)
            return await self._complete(request, gen, record)
        except asyncio.CancelledError:
            record.mark_disconnected()
            raise
        finally:
            self.running -= 1
            record.finished.set()
            self._touch(model, keep_alive)

    async def _stream(
        self, request: web.Request, gen: _Generation, record: StreamRecord
    ) -> web.StreamResponse:
        b = gen.b
        await asyncio.sleep(b.first_token_delay_s)
        cut, tail = gen.cut()
        if cut == 0 and tail == "error":  # 8.3: an error before the first line is a plain error answer
            record.outcome = "error"
            return json_response(500, {"error": b.error_message})
        if cut == 0 and tail == "close":
            return self._close(request, record)
        resp = web.StreamResponse(headers={"Content-Type": _NDJSON})
        resp.enable_chunked_encoding()
        items: list[_Step | str] = [*gen.steps[:cut], tail]
        per_write = max(1, b.tokens_per_write)
        try:
            for start in range(0, len(items), per_write):
                if start:
                    await asyncio.sleep(b.token_delay_s)
                group = items[start : start + per_write]
                data = b"".join(gen.line(x) for x in group if isinstance(x, _Step))
                if "final" in group:
                    data += (go_json(gen.final(aggregate=False)) + "\n").encode()
                elif "error" in group:
                    data += (go_json({"error": b.error_message}) + "\n").encode()
                if data:
                    await self._write(request, resp, record, gen, data, len(group) - ("close" in group))
                if "close" in group:
                    self._close(request, record)
                    return resp
            await resp.write_eof()
            record.completed, record.outcome = True, "done" if tail == "final" else "error"
        except (ConnectionError, _PeerGone):
            record.mark_disconnected()
        return resp

    async def _write(
        self,
        request: web.Request,
        resp: web.StreamResponse,
        record: StreamRecord,
        gen: _Generation,
        data: bytes,
        lines: int,
    ) -> None:
        """Write lines; every resp.write drains, so this blocks while the peer does not read."""
        transport = request.transport
        if transport is None or transport.is_closing():
            raise _PeerGone
        if not resp.prepared:
            await resp.prepare(request)
            record.headers_sent = True
            gen.first_ns = time.perf_counter_ns()
        record.writing = True
        try:
            for i, piece in enumerate(split_bytes(data, gen.b.split_writes)):
                if i:
                    await asyncio.sleep(0.002)  # let each piece leave as its own TCP segment
                await resp.write(piece)
                record.bytes_written += len(piece)
        finally:
            record.writing = False
        record.lines_written += lines

    async def _complete(
        self, request: web.Request, gen: _Generation, record: StreamRecord
    ) -> web.StreamResponse:
        """stream:false: the same timing, then one object (1.4 / 2.3); mid-generation errors are 500s."""
        b = gen.b
        cut, tail = gen.cut()
        await asyncio.sleep(b.first_token_delay_s + b.token_delay_s * cut)
        if tail == "error":
            record.outcome = "error"
            return json_response(500, {"error": b.error_message})
        if tail == "close":
            return self._close(request, record)
        gen.first_ns = gen.first_ns or gen.start_ns
        resp = json_response(200, gen.final(aggregate=True))
        record.headers_sent, record.completed, record.lines_written = True, True, 1
        record.outcome = "done"
        record.bytes_written = len(resp.body or b"") if isinstance(resp.body, bytes) else 0
        return resp

    @staticmethod
    def _close(request: web.Request, record: StreamRecord) -> web.StreamResponse:
        """Drop the connection with no done line, as a crashed Ollama would."""
        record.closed_by_fake, record.outcome = True, "close"
        if request.transport is not None:
            request.transport.close()
        return web.Response()
