"""Embedding routes: /api/embed and the older /api/embeddings (section 5)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from .state import ServerState
from .wire import ApiError, count_tokens, decode_body, embedding_vector, json_response, parse_keep_alive


class EmbedRoutes(ServerState):
    """Route handlers of the embedding endpoints."""

    async def _embed(self, request: web.Request, raw: bytes) -> web.StreamResponse:
        req = decode_body(raw, "EmbedRequest")
        keep_alive = parse_keep_alive(req.get("keep_alive"))
        name = req.get("model") or ""
        model = self._lookup(name)
        inputs = embed_inputs(req.get("input"))
        self.embed_inputs.extend(inputs)
        start = time.perf_counter_ns()
        cold = model.name not in self.loaded
        self._touch(model, keep_alive)
        if not inputs:
            return json_response(200, {"model": name, "embeddings": []})
        await asyncio.sleep(self.embed_delay_s)
        dims = req.get("dimensions")
        size = dims if isinstance(dims, int) and 0 < dims < model.embedding_length else model.embedding_length
        vectors, tokens = [], 0
        for text in inputs:
            n = count_tokens(text)
            if n > model.context_length:
                if req.get("truncate") is False:
                    raise ApiError(400, "the input length exceeds the context length")
                text, n = text[: model.context_length * 4], model.context_length
            tokens += n
            vectors.append(embedding_vector(name, text, size))
        load_ns = 1_200_000 if cold else 40_000
        return json_response(
            200,
            {
                "model": name,
                "embeddings": vectors,
                "total_duration": time.perf_counter_ns() - start + load_ns,
                "load_duration": load_ns,
                "prompt_eval_count": tokens,
            },
        )

    async def _embeddings(self, request: web.Request, raw: bytes) -> web.StreamResponse:
        """The older endpoint: one prompt, one (not normalised) vector, no metrics."""
        req = decode_body(raw, "EmbeddingRequest")
        keep_alive = parse_keep_alive(req.get("keep_alive"))
        name = req.get("model") or ""
        model = self._lookup(name)
        self._touch(model, keep_alive)
        prompt = req.get("prompt") or ""
        if not isinstance(prompt, str) or not prompt:
            return json_response(200, {"embedding": []})
        self.embed_inputs.append(prompt)
        await asyncio.sleep(self.embed_delay_s)
        return json_response(
            200, {"embedding": embedding_vector(name, prompt, model.embedding_length, normalize=False)}
        )


def embed_inputs(value: Any) -> list[str]:
    """/api/embed `input`: a string or a list of strings; empty means load only."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ApiError(400, "invalid input type")
