"""Cache keys: a digest of everything that changes the answer, under the cache's prefix."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import msgspec

from citadel_proxy.pipeline.request import Options
from citadel_proxy.pipeline.types import Context

# Bumped when what a key covers (or an entry's layout) changes, so old entries are simply never found.
# 2: keys cover the pipeline's own request (pipeline/request.py), no longer Ollama's.
KEY_VERSION = 2


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
    normalize: bool,
    model: str,
    text: str,
    truncate: bool | None,
    dimensions: int | None,
    options: Options | None,
) -> Key:
    """Normalising counts: Ollama's /api/embed normalises vectors, the older /api/embeddings does not."""
    truncate = True if truncate is None else truncate
    return Key.of(prefix, [normalize, model, truncate, dimensions, options, text])


def response_key(prefix: str, ctx: Context) -> Key:
    """The request as the pipeline carries it (resolved model, messages, options), streamed or not."""
    request = ctx.request
    if request.kind == "embed":
        raise TypeError("the response cache serves chat and completion pipelines only")
    return Key.of(prefix, msgspec.structs.replace(request, stream=False))
