"""Cache keys: a digest of everything that changes the answer, under the cache's prefix."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import msgspec

from citadel_proxy.pipeline.types import Context
from citadel_proxy.upstream.wire import OllamaChatRequest, OllamaGenerateRequest

# Bumped when what a key covers (or an entry's layout) changes, so old entries are simply never found.
KEY_VERSION = 1


@dataclass(frozen=True, slots=True)
class Key:
    name: str  # under the cache's prefix; the backend adds the instance's own (redis.key_prefix)
    tag: bytes  # written into the entry, checked on read

    @classmethod
    def of(cls, prefix: str, parts: Any) -> Key:
        # JSON of a list, keys sorted: unambiguous (no separator a text could contain) and stable.
        digest = hashlib.sha256(msgspec.json.encode([KEY_VERSION, parts], order="sorted")).digest()
        return cls(prefix + digest.hex(), digest[:8])


def embedding_key(
    prefix: str,
    *,
    endpoint: str,
    model: str,
    text: str,
    truncate: bool | None,
    dimensions: int | None,
    options: dict[str, Any] | None,
) -> Key:
    """The endpoint counts: /api/embed normalises vectors, the older /api/embeddings does not."""
    truncate = True if truncate is None else truncate
    return Key.of(prefix, [endpoint, model, truncate, dimensions, options or None, text])


def response_key(prefix: str, ctx: Context) -> Key:
    """The request as sent to Ollama (resolved model, messages, options), whether streamed or not."""
    sent = ctx.upstream
    if not isinstance(sent, OllamaChatRequest | OllamaGenerateRequest):
        raise TypeError("the response cache serves chat and completion pipelines only")
    upstream = msgspec.structs.replace(sent, stream=False)
    return Key.of(prefix, [ctx.endpoint, upstream])
