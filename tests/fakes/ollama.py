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

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import fnmatch
import hashlib
import ipaddress
import json
import math
import re
import secrets
import signal
import socket
import string
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from aiohttp import web

DEFAULT_TOKENS = ("Hello", ",", " world", "!")
VERSION = "0.33.0-rc2"
DEFAULT_KEEP_ALIVE_S = 300.0
_JSON = "application/json; charset=utf-8"
_NDJSON = "application/x-ndjson"
_GO_DURATION = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_LOCAL_ORIGIN_HOSTS = ("localhost", "127.0.0.1", "0.0.0.0")
_APP_ORIGINS = ("app://*", "file://*", "tauri://*", "vscode-webview://*", "vscode-file://*")
_THINK_LEVELS = ("low", "medium", "high", "max")
_FOREVER = datetime(2318, 1, 1, tzinfo=UTC)


# ---------------------------------------------------------------------------------------------- data types


@dataclass(frozen=True)
class FakeModel:
    """An installed model. `capabilities` gates tools/insert/thinking/chat exactly as Ollama does."""

    name: str
    capabilities: tuple[str, ...] = ("completion",)
    family: str = "llama"
    parameter_size: str = "3.8B"
    quantization_level: str = "Q4_K_M"
    context_length: int = 4096
    embedding_length: int = 768
    size: int = 2_176_178_913
    modified_at: datetime | None = None


def default_models() -> list[FakeModel]:
    """The models a FakeOllama has when none are given."""
    return [
        FakeModel("phi3:latest", family="phi3"),
        FakeModel("openchat:latest", parameter_size="7B"),
        FakeModel("qwen3:latest", ("completion", "tools", "thinking"), family="qwen3", parameter_size="8.2B"),
        FakeModel("codellama:code", ("completion", "insert"), parameter_size="7B"),
        FakeModel(
            "nomic-embed-text:latest",
            ("embedding",),
            family="nomic-bert",
            parameter_size="137M",
            quantization_level="F16",
            context_length=2048,
            size=274_302_450,
        ),
    ]


@dataclass
class Behavior:
    """What one generation does. "Token lines" are thinking lines, then content lines, then (if
    `tool_calls_on_final` is False) one tool-call line; `error_after`/`close_after` count them.

    - first_token_delay_s: nothing at all (not even headers) is sent before the first line (10.2).
    - token_delay_s: between writes (one write carries `tokens_per_write` lines).
    - error_status/error_body: answer with that status and JSON body (a str body is sent as is) instead.
    - error_after=N: N token lines, then `{"error": error_message}` and no done line (0: a 500 JSON answer).
    - close_after=N: N token lines, then the connection is closed with no done line.
    - tool_calls: [{"name": ..., "arguments": {...}}] (id/index are added) or full Ollama tool-call dicts.
    - big_line_bytes: pads token line `big_line_index` with "x" to about that many bytes.
    - split_writes=K: each write goes out in K pieces with a short sleep between them.
    - eval_count/prompt_eval_count: None means computed (token lines / prompt size).
    """

    tokens: list[str] = field(default_factory=lambda: list(DEFAULT_TOKENS))
    thinking: list[str] = field(default_factory=list)
    final_content: str = ""
    token_delay_s: float = 0.0
    first_token_delay_s: float = 0.0
    error_status: int | None = None
    error_body: Any = None
    error_message: str = "an error was encountered while running the model: fake failure"
    error_after: int | None = None
    close_after: int | None = None
    done_reason: str = "stop"
    prompt_eval_count: int | None = None
    eval_count: int | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    tool_calls_on_final: bool = True
    big_line_bytes: int = 0
    big_line_index: int = 0
    split_writes: int = 1
    tokens_per_write: int = 1

    @classmethod
    def counted(cls, n: int, **kwargs: Any) -> Behavior:
        """N predictable tokens "w0 ", "w1 ", ... (what the CLI's --tokens uses)."""
        return cls(tokens=counted_tokens(n), **kwargs)


def counted_tokens(n: int) -> list[str]:
    """The tokens of Behavior.counted(n): their concatenation is the expected content."""
    return [f"w{i} " for i in range(n)]


class RecordedRequest(NamedTuple):
    """One request as the fake received it (json body is None when absent or not JSON)."""

    method: str
    path: str
    json: Any
    headers: dict[str, str]


@dataclass
class StreamRecord:
    """Lifecycle of one chat/generate answer (streamed or not); times are time.monotonic().

    outcome: "done" (done line / object sent), "error" (error line or 500), "error_status", "close"
    (the fake dropped the connection), "disconnect" (the peer left first). `writing` is True while a
    write waits for the peer to read (backpressure); `bytes_written` counts what left so far.
    """

    path: str
    model: str
    stream: bool
    started_at: float = field(default_factory=time.monotonic)
    headers_sent: bool = False
    lines_written: int = 0
    bytes_written: int = 0
    writing: bool = False
    completed: bool = False
    outcome: str = ""
    closed_by_fake: bool = False
    disconnected: bool = False
    disconnected_at: float | None = None
    disconnect_event: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    def mark_disconnected(self) -> None:
        self.outcome = self.outcome or "disconnect"
        if not self.disconnected:
            self.disconnected, self.disconnected_at = True, time.monotonic()
            self.disconnect_event.set()


@dataclass
class PullRecord:
    """One /api/pull: the job goes on after the client leaves, as the brief of our tests asks."""

    model: str
    client_disconnected: bool = False
    completed: bool = False
    failed: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)


class ApiError(Exception):
    """An Ollama JSON error answer: status plus {"error": message}."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class _PeerGone(Exception):
    """The client's transport is closing: stop writing."""


# ---------------------------------------------------------------------------------------------- helpers


def go_json(obj: Any) -> str:
    """JSON as Go's encoding/json writes it: compact, UTF-8, with <, >, & and U+2028/9 escaped."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    for raw, esc in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(raw, esc)
    return text


def created_at() -> str:
    """time.Now().UTC() in RFC 3339 with up to 9 fraction digits, trailing zeros trimmed (Go's format)."""
    ns = time.time_ns()
    base = datetime.fromtimestamp(ns // 1_000_000_000, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    frac = f"{ns % 1_000_000_000:09d}".rstrip("0")
    return f"{base}.{frac}Z" if frac else f"{base}Z"


def local_time(when: datetime) -> str:
    """A time in the server's local offset, as Go prints modified_at / expires_at ("Z" when UTC)."""
    local = when.astimezone()
    text = local.strftime("%Y-%m-%dT%H:%M:%S")
    frac = f"{local.microsecond:06d}".rstrip("0")
    text += f".{frac}" if frac else ""
    offset = local.strftime("%z")
    return f"{text}Z" if offset in ("+0000", "") else f"{text}{offset[:3]}:{offset[3:]}"


def normalize_name(name: str) -> str:
    """Ollama's name matching: case-insensitive, default registry/namespace dropped, tag default latest."""
    name = name.strip().lower()
    for prefix in ("registry.ollama.ai/", "library/"):
        name = name.removeprefix(prefix)
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def count_tokens(text: str) -> int:
    """A deterministic stand-in for a tokenizer: about 4 bytes a token."""
    return max(1, math.ceil(len(text.encode()) / 4)) if text else 0


def parse_keep_alive(value: Any) -> float | None:
    """keep_alive in seconds (negative: forever); None when absent. Strings are Go durations."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        kind = type(value).__name__
        raise ApiError(400, f"json: cannot unmarshal {kind} into Go value of type api.Duration")
    if not isinstance(value, str):
        return float(value)
    text = value.strip()
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    if body == "0":
        return 0.0
    matches = list(_GO_DURATION.finditer(body))
    whole = "".join(m.group(0) for m in matches) == body
    if not body or not whole or any(m.group(1) in ("", ".") for m in matches):
        unit_missing = body.replace(".", "", 1).isdigit()
        raise ApiError(400, f'time: {"missing unit in" if unit_missing else "invalid"} duration "{value}"')
    return sign * sum(float(m.group(1)) * _UNIT_S[m.group(2)] for m in matches)


def embedding_vector(model: str, text: str, dimensions: int, *, normalize: bool = True) -> list[float]:
    """The fake's embedding of `text`: derived from sha256(model + text), L2-normalised like /api/embed."""
    seed = f"{normalize_name(model)}\x00{text}".encode()
    raw: list[float] = []
    counter = 0
    while len(raw) < dimensions:
        digest = hashlib.sha256(seed + counter.to_bytes(4, "little")).digest()
        raw.extend((b - 127.5) / 127.5 for b in digest)
        counter += 1
    raw = raw[:dimensions]
    if not normalize:
        return [round(v, 8) for v in raw]
    norm = math.sqrt(sum(v * v for v in raw)) or 1.0
    return [round(v / norm, 8) for v in raw]


def host_allowed(host_header: str) -> bool:
    """Ollama's allowedHostsMiddleware for a loopback listener (section 11)."""
    host = host_header.strip()
    if host.startswith("["):
        host = host[1:].partition("]")[0]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    host = host.lower()
    with contextlib.suppress(ValueError):
        addr = ipaddress.ip_address(host)
        return addr.is_loopback or addr.is_private or addr.is_unspecified or addr.is_link_local
    if host in ("", "localhost", socket.gethostname().lower()):
        return True
    return host.endswith((".localhost", ".local", ".internal"))


def origin_allowed(origin: str, extra: Iterable[str] = ()) -> bool:
    """Ollama's CORS origin list: localhost/127.0.0.1/0.0.0.0 on any port, app schemes, OLLAMA_ORIGINS."""
    patterns = [
        f"{scheme}://{host}{port}"
        for host in _LOCAL_ORIGIN_HOSTS
        for scheme in ("http", "https")
        for port in ("", ":*")
    ]
    patterns += [*_APP_ORIGINS, *extra]
    return any(fnmatch.fnmatchcase(origin.lower(), p.lower()) for p in patterns)


def tool_call_id() -> str:
    """The Go parser's id: "call_" plus 8 random [a-z0-9]."""
    alphabet = string.ascii_lowercase + string.digits
    return "call_" + "".join(secrets.choice(alphabet) for _ in range(8))


def make_tool_calls(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ollama-shaped tool calls (id, function.index inside function, arguments as an object)."""
    calls = []
    for index, spec in enumerate(specs):
        if "function" in spec:
            calls.append(spec)
            continue
        function = {"index": index, "name": spec["name"], "arguments": spec.get("arguments", {})}
        calls.append({"id": spec.get("id") or tool_call_id(), "function": function})
    return calls


def json_response(status: int, obj: Any) -> web.Response:
    return web.Response(status=status, body=go_json(obj).encode(), headers={"Content-Type": _JSON})


def text_response(status: int, text: str, content_type: str = "text/plain") -> web.Response:
    return web.Response(status=status, body=text.encode(), headers={"Content-Type": content_type})


def decode_body(raw: bytes, type_name: str) -> dict[str, Any]:
    """Decode a JSON object body with Ollama's (Go's) error messages."""
    if not raw.strip():
        raise ApiError(400, "missing request body")
    text = raw.decode(errors="replace")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.pos >= len(text.rstrip()):
            raise ApiError(400, "unexpected EOF") from None
        raise ApiError(400, f"invalid character '{text[exc.pos]}' looking for beginning of value") from None
    if not isinstance(obj, dict):
        kind = {list: "array", str: "string", bool: "bool"}.get(type(obj), "number")
        raise ApiError(400, f"json: cannot unmarshal {kind} into Go value of type api.{type_name}")
    return obj


def request_stream(req: dict[str, Any]) -> bool:
    return req.get("stream") is not False


def details(model: FakeModel) -> dict[str, Any]:
    return {
        "parent_model": "",
        "format": "gguf",
        "family": model.family,
        "families": [model.family],
        "parameter_size": model.parameter_size,
        "quantization_level": model.quantization_level,
    }


def digest(model: FakeModel) -> str:
    return hashlib.sha256(model.name.encode()).hexdigest()


def parameter_count(size: str) -> int:
    scale = {"K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}.get(size[-1:].upper(), 1.0)
    try:
        return int(float(size.rstrip("KMBTkmbt")) * scale)
    except ValueError:
        return 0


# ---------------------------------------------------------------------------------------------- generation


@dataclass
class _Step:
    content: str = ""
    thinking: str = ""
    tool_calls: list[dict[str, Any]] | None = None


class _Generation:
    """The lines and final object of one chat/generate answer, following sections 1-3 of the doc."""

    def __init__(self, kind: str, req: dict[str, Any], model: FakeModel, behavior: Behavior, cold: bool):
        self.kind, self.req, self.model, self.b, self.cold = kind, req, model, behavior, cold
        self.name: str = req["model"]
        self.start_ns = time.perf_counter_ns()
        self.first_ns: int | None = None
        self.calls = make_tool_calls(behavior.tool_calls)
        self.steps, self.done_reason = self._plan()
        self.n_tokens = sum(1 for s in self.steps if s.tool_calls is None)

    def _plan(self) -> tuple[list[_Step], str]:
        b = self.b
        thinking = [] if self.req.get("think") is False else b.thinking
        steps = [_Step(thinking=t) for t in thinking] + [_Step(content=c) for c in b.tokens]
        reason = b.done_reason
        limit = (self.req.get("options") or {}).get("num_predict")
        if isinstance(limit, int) and 0 < limit < len(steps):
            steps, reason = steps[:limit], "length"
        if b.big_line_bytes and 0 <= b.big_line_index < len(steps):
            step = steps[b.big_line_index]
            pad = "x" * max(0, b.big_line_bytes - len(self.line(step)))
            step.content, step.thinking = (
                (step.content + pad, step.thinking)
                if not step.thinking
                else (step.content, step.thinking + pad)
            )
        if self.calls and not b.tool_calls_on_final:
            steps.append(_Step(tool_calls=self.calls))
        return steps, reason

    def cut(self) -> tuple[int, str]:
        """How many token lines go out, then what ends the answer: "final", "error" or "close"."""
        n = len(self.steps)
        ends = [(self.b.error_after, "error"), (self.b.close_after, "close")]
        hits = [(at, what) for at, what in ends if at is not None and at <= n]
        return min(hits) if hits else (n, "final")

    def _body(self, content: str, thinking: str, calls: list[dict[str, Any]] | None) -> dict[str, Any]:
        obj: dict[str, Any] = {"model": self.name, "created_at": created_at()}
        if self.kind == "chat":
            message: dict[str, Any] = {"role": "assistant", "content": content}
            if thinking:
                message["thinking"] = thinking
            if calls:
                message["tool_calls"] = calls
            obj["message"] = message
        else:
            obj["response"] = content
            if thinking:
                obj["thinking"] = thinking
        return obj

    def line(self, step: _Step) -> bytes:
        obj = self._body(step.content, step.thinking, step.tool_calls)
        obj["done"] = False
        if self.kind == "generate" and step.tool_calls:
            obj["tool_calls"] = step.tool_calls
        return (go_json(obj) + "\n").encode()

    def final(self, aggregate: bool) -> dict[str, Any]:
        """The done line, or (aggregate) the stream:false object with everything concatenated."""
        steps = self.steps[: self.cut()[0]] if aggregate else []
        content = "".join(s.content for s in steps) + self.b.final_content
        thinking = "".join(s.thinking for s in steps)
        calls = self.calls if aggregate or self.b.tool_calls_on_final else []
        obj = self._body(content, thinking, calls)
        if self.kind == "chat":
            if self.done_reason:
                obj["done_reason"] = self.done_reason
            obj["done"] = True
        else:
            obj["done"] = True
            if self.done_reason:
                obj["done_reason"] = self.done_reason
            if not self.req.get("raw"):
                size = self.prompt_tokens() + self.n_tokens
                obj["context"] = [(i * 7919 + 128000) % 128256 for i in range(size)]
        obj.update(self.metrics())
        if self.kind == "generate" and calls:
            obj["tool_calls"] = calls
        return obj

    def prompt_tokens(self) -> int:
        if self.b.prompt_eval_count is not None:
            return self.b.prompt_eval_count
        if self.kind == "chat":
            messages = [m for m in self.req.get("messages") or [] if isinstance(m, dict)]
            return sum(count_tokens(str(m.get("content") or "")) + 4 for m in messages)
        texts = (self.req.get(k) for k in ("system", "prompt", "suffix"))
        return sum(count_tokens(t) for t in texts if isinstance(t, str)) + 4

    def metrics(self) -> dict[str, int]:
        now = time.perf_counter_ns()
        evals = self.b.eval_count if self.b.eval_count is not None else self.n_tokens
        prompt = self.prompt_tokens()
        load_ns = 1_200_000 if self.cold else 40_000
        prompt_ns = prompt * 25_000
        eval_ns = max(now - (self.first_ns or now), evals * 10_000)
        values = {
            "total_duration": (now - self.start_ns) + load_ns + prompt_ns + eval_ns,
            "load_duration": load_ns,
            "prompt_eval_count": prompt,
            "prompt_eval_duration": prompt_ns,
            "eval_count": evals,
            "eval_duration": eval_ns,
        }
        return {k: v for k, v in values.items() if v}


def split_bytes(data: bytes, pieces: int) -> list[bytes]:
    size = max(1, math.ceil(len(data) / max(1, pieces)))
    return [data[i : i + size] for i in range(0, len(data), size)]


# ---------------------------------------------------------------------------------------------- the server

_Progress = dict[str, Any] | None
Handler = Callable[[web.Request, bytes], Awaitable[web.StreamResponse]]
DEFAULT_REGISTRY = ("llama3.2:latest", "tinyllama:latest", "all-minilm:latest", "qwen2.5:0.5b")


class FakeOllama:
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

    def install(self, model: str | FakeModel, *, age_h: float = 0.0) -> FakeModel:
        if isinstance(model, str):
            caps = ("embedding",) if "embed" in model.lower() else ("completion",)
            model = FakeModel(normalize_name(model), caps)
        if model.modified_at is None:
            model = dataclasses.replace(model, modified_at=datetime.now(UTC) - timedelta(hours=age_h))
        model = dataclasses.replace(model, name=normalize_name(model.name))
        self.models[model.name] = model
        return model

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

    def _lookup(self, name: str) -> FakeModel:
        model = self.models.get(normalize_name(name)) if name else None
        if model is None:
            raise ApiError(404, f"model '{name}' not found")
        return model

    def _pick(self, model: FakeModel) -> Behavior:
        if self._queue:
            return self._queue.popleft()
        return self._per_model.get(model.name, self.behavior)

    def _touch(self, model: FakeModel, keep_alive: float | None) -> None:
        """Keep-alive bookkeeping of 10.3: no value keeps the loaded model's own; 0 unloads."""
        seconds = self._keep_alive.get(model.name, DEFAULT_KEEP_ALIVE_S) if keep_alive is None else keep_alive
        if seconds == 0:
            self.loaded.pop(model.name, None)
            return
        self._keep_alive[model.name] = seconds
        self.loaded[model.name] = _FOREVER if seconds < 0 else datetime.now(UTC) + timedelta(seconds=seconds)

    # -- health and model management (sections 6 and 7)

    async def _root(self, request: web.Request, raw: bytes) -> web.StreamResponse:
        return text_response(200, "Ollama is running", "text/plain; charset=utf-8")

    async def _version(self, request: web.Request, raw: bytes) -> web.StreamResponse:
        return json_response(200, {"version": self.version})

    async def _tags(self, request: web.Request, raw: bytes) -> web.StreamResponse:
        models = sorted(self.models.values(), key=lambda m: m.modified_at or _FOREVER, reverse=True)
        return json_response(
            200,
            {
                "models": [
                    {
                        "name": m.name,
                        "model": m.name,
                        "modified_at": local_time(m.modified_at or datetime.now(UTC)),
                        "size": m.size,
                        "digest": digest(m),
                        "details": details(m),
                    }
                    for m in models
                ]
            },
        )

    async def _ps(self, request: web.Request, raw: bytes) -> web.StreamResponse:
        now = datetime.now(UTC)
        pairs = [(exp, self.models[k]) for k, exp in self.loaded.items() if exp > now and k in self.models]
        live = sorted(pairs, key=lambda pair: pair[0], reverse=True)
        return json_response(
            200,
            {
                "models": [
                    {
                        "name": m.name,
                        "model": m.name,
                        "size": m.size,
                        "digest": digest(m),
                        "details": details(m),
                        "expires_at": local_time(exp),
                        "size_vram": m.size,
                        "context_length": m.context_length,
                    }
                    for exp, m in live
                ]
            },
        )

    async def _show(self, request: web.Request, raw: bytes) -> web.StreamResponse:
        req = decode_body(raw, "ShowRequest")
        name = req.get("model") or req.get("name") or ""
        if not name:
            raise ApiError(400, "model is required")
        m = self._lookup(name)
        arch = m.family.replace("-", "_")
        return json_response(
            200,
            {
                "modelfile": f'# Modelfile generated by "ollama show"\nFROM {m.name}\n',
                "parameters": 'stop                           "<|end|>"',
                "template": "{{ if .System }}{{ .System }}\n{{ end }}{{ .Prompt }}",
                "details": details(m),
                "model_info": {
                    "general.architecture": arch,
                    "general.parameter_count": parameter_count(m.parameter_size),
                    f"{arch}.context_length": m.context_length,
                    f"{arch}.embedding_length": m.embedding_length,
                },
                "capabilities": list(m.capabilities),
                "modified_at": local_time(m.modified_at or datetime.now(UTC)),
            },
        )

    async def _delete(self, request: web.Request, raw: bytes) -> web.StreamResponse:
        req = decode_body(raw, "DeleteRequest")
        name = req.get("model") or req.get("name") or ""
        if not name:
            raise ApiError(400, 'name "" is invalid')
        model = self._lookup(name)
        del self.models[model.name]
        self.loaded.pop(model.name, None)
        return web.Response(status=200)

    async def _pull(self, request: web.Request, raw: bytes) -> web.StreamResponse:
        req = decode_body(raw, "PullRequest")
        name = req.get("model") or req.get("name") or ""
        if not name:
            raise ApiError(400, "model is required")
        record = PullRecord(model=name)
        self.pulls.append(record)
        lines: asyncio.Queue[_Progress] = asyncio.Queue()
        task = asyncio.create_task(self._pull_job(name, record, lines))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if not request_stream(req):
            await asyncio.shield(task)
            if record.failed:
                return json_response(500, {"error": "pull model manifest: file does not exist"})
            return json_response(200, {"status": "success"})
        resp = web.StreamResponse(headers={"Content-Type": _NDJSON})
        resp.enable_chunked_encoding()
        try:
            await resp.prepare(request)
            while (line := await lines.get()) is not None:
                await resp.write((go_json(line) + "\n").encode())
            await resp.write_eof()
        except asyncio.CancelledError:
            record.client_disconnected = True
            raise
        except ConnectionError:
            record.client_disconnected = True
        return resp

    async def _pull_job(self, name: str, record: PullRecord, out: asyncio.Queue[_Progress]) -> None:
        """The download: it runs on whether or not a client still reads its progress."""
        try:
            out.put_nowait({"status": "pulling manifest"})
            await asyncio.sleep(self.pull_step_delay_s)
            key = normalize_name(name)
            if key not in self.registry:
                record.failed = True
                out.put_nowait({"error": "pull model manifest: file does not exist"})
                return
            layer = hashlib.sha256(key.encode()).hexdigest()
            total = 1_000_000 + len(key) * 1000
            out.put_nowait({"status": f"pulling {layer[:12]}", "digest": f"sha256:{layer}", "total": total})
            for done in (total // 3, 2 * total // 3, total):
                await asyncio.sleep(self.pull_step_delay_s)
                out.put_nowait(
                    {
                        "status": f"pulling {layer[:12]}",
                        "digest": f"sha256:{layer}",
                        "total": total,
                        "completed": done,
                    }
                )
            for status in ("verifying sha256 digest", "writing manifest", "success"):
                await asyncio.sleep(self.pull_step_delay_s)
                if status == "success":
                    existing = self.models.get(key)
                    self.install(dataclasses.replace(existing, modified_at=None) if existing else key)
                    record.completed = True
                out.put_nowait({"status": status})
        finally:
            out.put_nowait(None)
            record.done.set()

    # -- generation (sections 1-3, 8.3, 10.2)

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

    # -- embeddings (section 5)

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


# ---------------------------------------------------------------------------------------------- standalone


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.ollama", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (the URL is printed)")
    parser.add_argument("--tokens", type=int, default=None, help='N tokens "w0 ", "w1 ", ... (default 4)')
    parser.add_argument("--token-delay-ms", type=float, default=0.0)
    parser.add_argument("--first-token-delay-ms", type=float, default=0.0)
    parser.add_argument("--error-after", type=int, default=None)
    parser.add_argument("--close-after", type=int, default=None)
    parser.add_argument("--done-reason", default="stop")
    parser.add_argument("--embed-delay-ms", type=float, default=0.0)
    parser.add_argument("--models", default=None, help="comma-separated names (default: the built-in set)")
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    tokens = counted_tokens(args.tokens) if args.tokens is not None else list(DEFAULT_TOKENS)
    behavior = Behavior(
        tokens=tokens,
        token_delay_s=args.token_delay_ms / 1000,
        first_token_delay_s=args.first_token_delay_ms / 1000,
        error_after=args.error_after,
        close_after=args.close_after,
        done_reason=args.done_reason,
    )
    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    async with FakeOllama(
        models, behavior=behavior, host=args.host, port=args.port, embed_delay_s=args.embed_delay_ms / 1000
    ) as fake:
        print(fake.url, flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    asyncio.run(_serve(_parse_args(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
