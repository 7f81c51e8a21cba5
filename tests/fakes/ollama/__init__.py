"""A real in-process fake Ollama (aiohttp server) that follows our protocol notes (ollama-protocol.md).

    async with FakeOllama() as fake:                # binds 127.0.0.1 on a free port
        fake.next(Behavior(tokens=["Hi", "!"], token_delay_s=0.01))   # the next chat/generate only
        ...point the gateway at fake.url...
        assert fake.count("/api/chat") == 1
        rec = fake.streams[-1]
        await asyncio.wait_for(rec.disconnect_event.wait(), 1)        # the gateway closed upstream

Models (default_models()): phi3:latest, openchat:latest, qwen3:latest (tools, thinking), codellama:code
(insert), nomic-embed-text:latest (embedding). Capabilities are enforced as Ollama does (tools, think,
suffix, chat on an embedding model). Pullable names: `registry` (default DEFAULT_REGISTRY + installed).

Which behaviour a generation uses: the `fake.next()` queue first (consumed only by a request that reaches
generation, i.e. not by 4xx answers or load-only requests), then `fake.set_behavior(model, b)`, then
`fake.behavior` (the default). Handlers are cancelled the moment the peer disconnects
(`handler_cancellation=True`), so `StreamRecord.disconnected_at` is set within milliseconds.

Observe: `requests` (every request, 403s included), `count(path)`, `streams` (one StreamRecord per
chat/generate answer), `wait_streams(n)`, `pulls`, `embed_inputs`/`embed_input_count`, `loaded`.
Unlike real Ollama (6.3), a pull goes on to completion when its last client leaves.

Standalone, for gateways run as a subprocess (prints the URL as its first stdout line, serves until killed):
    python -m tests.fakes.ollama --port 0 --tokens 20 --token-delay-ms 5 --first-token-delay-ms 100
"""

from .behavior import DEFAULT_TOKENS, Behavior, PullRecord, RecordedRequest, StreamRecord, counted_tokens
from .models import DEFAULT_REGISTRY, FakeModel, default_models
from .server import VERSION, FakeOllama
from .wire import ApiError, embedding_vector, go_json, normalize_name, parse_keep_alive

__all__ = [
    "DEFAULT_REGISTRY",
    "DEFAULT_TOKENS",
    "VERSION",
    "ApiError",
    "Behavior",
    "FakeModel",
    "FakeOllama",
    "PullRecord",
    "RecordedRequest",
    "StreamRecord",
    "counted_tokens",
    "default_models",
    "embedding_vector",
    "go_json",
    "normalize_name",
    "parse_keep_alive",
]
