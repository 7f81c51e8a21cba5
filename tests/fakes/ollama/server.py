"""The FakeOllama server: construction, lifecycle, test helpers and section 11 checks, then routing."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime

from aiohttp import web

from .behavior import Behavior, PullRecord, RecordedRequest, StreamRecord
from .chat import ChatRoutes
from .embed import EmbedRoutes
from .manage import ManageRoutes
from .models import DEFAULT_REGISTRY, FakeModel, default_models
from .wire import ApiError, host_allowed, json_response, normalize_name, origin_allowed, text_response

VERSION = "0.33.0-rc2"
Handler = Callable[[web.Request, bytes], Awaitable[web.StreamResponse]]


class FakeOllama(ManageRoutes, ChatRoutes, EmbedRoutes):
    """In-process fake Ollama. `async with FakeOllama() as fake:` then use `fake.url`.

    Observability: `requests` (RecordedRequest list), `count(path)`, `streams` (StreamRecord per
    chat/generate answer), `pulls` (PullRecord), `embed_inputs` (every text embedded, in arrival order),
    `loaded` (model -> expires_at, what /api/ps shows). Settable: `behavior`, `embed_delay_s`,
    `pull_step_delay_s`, `models` (via install/uninstall).
    """

    def __init__(
        self,
        models: Iterable[str | FakeModel] | None = None,
        *,
        behavior: Behavior | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        registry: Iterable[str] | None = None,
        version: str = VERSION,
        allowed_origins: Iterable[str] = (),
        pull_step_delay_s: float = 0.0,
        embed_delay_s: float = 0.0,
    ) -> None:
        self.behavior = behavior or Behavior()
        self.host, self.port, self.version = host, port, version
        self.allowed_origins = tuple(allowed_origins)
        self.pull_step_delay_s, self.embed_delay_s = pull_step_delay_s, embed_delay_s
        self.models: dict[str, FakeModel] = {}
        for age_h, model in enumerate(default_models() if models is None else models):
            self.install(model, age_h=age_h)
        self.registry = {normalize_name(n) for n in (DEFAULT_REGISTRY if registry is None else registry)}
        self.registry |= set(self.models)
        self.requests: list[RecordedRequest] = []
        self.streams: list[StreamRecord] = []
        self.pulls: list[PullRecord] = []
        self.embed_inputs: list[str] = []
        self.loaded: dict[str, datetime] = {}
        # Generations running now, and the most that ever ran at once (what max_concurrent must bound).
        self.running = 0
        self.most_running = 0
        self._keep_alive: dict[str, float] = {}
        self._queue: deque[Behavior] = deque()
        self._stream_added = asyncio.Event()
        self._per_model: dict[str, Behavior] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self.url = ""
        self._routes: dict[str, dict[str, Handler]] = {
            "/": {"GET": self._root, "HEAD": self._root},
            "/api/version": {"GET": self._version, "HEAD": self._version},
            "/api/tags": {"GET": self._tags, "HEAD": self._tags},
            "/api/ps": {"GET": self._ps},
            "/api/show": {"POST": self._show},
            "/api/chat": {"POST": self._chat},
            "/api/generate": {"POST": self._generate},
            "/api/embed": {"POST": self._embed},
            "/api/embeddings": {"POST": self._embeddings},
            "/api/pull": {"POST": self._pull},
            "/api/delete": {"DELETE": self._delete},
        }

    # -- lifecycle and test helpers

    async def __aenter__(self) -> FakeOllama:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        # handler_cancellation: notice a client leaving at once, as Go cancels the request context
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        self.port = self._runner.addresses[0][1]
        self.url = f"http://{self.host}:{self.port}"

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def next(self, behavior: Behavior) -> None:
        """Queue a behaviour for the next chat/generate request that reaches generation."""
        self._queue.append(behavior)

    def set_behavior(self, model: str, behavior: Behavior | None) -> None:
        """Behaviour for one model (None removes it)."""
        key = normalize_name(model)
        if behavior is None:
            self._per_model.pop(key, None)
        else:
            self._per_model[key] = behavior

    def count(self, path: str, method: str | None = None) -> int:
        return sum(1 for r in self.requests if r.path == path and method in (None, r.method))

    @property
    def embed_input_count(self) -> int:
        return len(self.embed_inputs)

    async def wait_streams(self, n: int, timeout_s: float = 5.0) -> list[StreamRecord]:
        """Wait until at least n chat/generate answers have started; returns `streams`."""
        async with asyncio.timeout(timeout_s):
            while len(self.streams) < n:
                self._stream_added.clear()
                await self._stream_added.wait()
        return self.streams

    # -- dispatch: section 11 checks, then gin-like routing

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body = None
        with contextlib.suppress(ValueError):
            body = json.loads(raw) if raw else None
        self.requests.append(RecordedRequest(request.method, request.path, body, dict(request.headers)))
        origin = request.headers.get("Origin")
        if origin is not None and not origin_allowed(origin, self.allowed_origins):
            return web.Response(status=403)
        if self._loopback() and not host_allowed(request.headers.get("Host", "")):
            return web.Response(status=403)
        methods = self._routes.get(request.path)
        if methods is None:
            return text_response(404, "404 page not found")
        handler = methods.get(request.method)
        if handler is None:
            return text_response(405, "405 method not allowed")
        try:
            return await handler(request, raw)
        except ApiError as exc:
            return json_response(exc.status, {"error": exc.message})

    def _loopback(self) -> bool:
        with contextlib.suppress(ValueError):
            return ipaddress.ip_address(self.host).is_loopback
        return self.host == "localhost"
