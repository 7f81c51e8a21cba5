"""What is measured: scenarios, the targets they run against, and the request each target is sent."""

from __future__ import annotations

import json
from dataclasses import dataclass

from bench.loadgen import SEQUENCE, Job
from bench.procs import Server

TOKENS = 64
SSE_TOKEN = b'"content":"'
_MESSAGES = [{"role": "user", "content": "Say something."}]
_GATEWAY_PATHS = {
    "chat": "/v1/chat/completions",
    "stream": "/v1/chat/completions",
    "voice": "/v1/voice/chat/completions",
    "gui": "/v1/gui/chat/completions",
    "slow": "/v1/voice/chat/completions",
    "paced": "/v1/voice/chat/completions",
    "embed-hit": "/api/embed",
    "embed-miss": "/api/embed",
}


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str  # a key of _GATEWAY_PATHS
    concurrency: int
    tokens: int = TOKENS

    @property
    def streams(self) -> bool:
        return self.kind in ("stream", "voice", "gui", "slow", "paced")

    @property
    def slow(self) -> bool:
        return self.kind == "slow"

    @property
    def embeddings(self) -> bool:
        return self.kind.startswith("embed")


@dataclass(frozen=True)
class Budget:
    """Every run stops at whichever comes first."""

    max_seconds: float
    max_requests: int
    slow_streams: int
    slow_tokens: int


FULL = Budget(max_seconds=1.0, max_requests=6000, slow_streams=500, slow_tokens=30)
QUICK = Budget(max_seconds=0.4, max_requests=1500, slow_streams=500, slow_tokens=10)


def all_scenarios(budget: Budget) -> list[Scenario]:
    found = [Scenario(f"chat c{c}", "chat", c) for c in (1, 8, 32)]
    for kind in ("stream", "voice", "gui"):
        found += [Scenario(f"{kind} c{c}", kind, c) for c in (1, 8, 32)]
    # Tokens 2 ms apart, one per write: what each forwarded event costs when a live model delivers them.
    found.append(Scenario("voice paced c16", "paced", 16))
    found.append(Scenario(f"slow x{budget.slow_streams}", "slow", budget.slow_streams, budget.slow_tokens))
    found += [Scenario("embed-hit c8", "embed-hit", 8), Scenario("embed-miss c8", "embed-miss", 8)]
    return found


@dataclass(frozen=True)
class Target:
    """Where requests go: the fake's own API (direct, nginx) or the gateway's OpenAI routes."""

    name: str
    gateway: bool
    server: Server  # whose CPU and RSS are measured on the fast fake
    port: int
    slow_server: Server
    slow_port: int
    headers: bytes = b""  # sent with every request (the full gateway's Authorization)
    only: tuple[str, ...] = ()  # scenario name prefixes this target runs; () runs them all

    def endpoint(self, scenario: Scenario) -> tuple[Server, int]:
        return (self.slow_server, self.slow_port) if scenario.slow else (self.server, self.port)

    def runs(self, scenario: Scenario) -> bool:
        return not self.only or scenario.name.startswith(self.only)


def job_for(target: Target, scenario: Scenario, budget: Budget) -> Job:
    _, port = target.endpoint(scenario)
    path, body, marker = (_gateway if target.gateway else _ollama)(scenario)
    if scenario.slow:
        count = scenario.concurrency
        return Job(
            port, path, body, count, count, 60.0, marker, one_per_connection=True, headers=target.headers
        )
    return Job(
        port, path, body, scenario.concurrency, budget.max_requests, budget.max_seconds, marker,
        headers=target.headers,
    )  # fmt: skip


def _dumps(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _embed_input(scenario: Scenario) -> str:
    # A miss needs an input never seen before: the load generator fills in a unique number.
    return "embed me " + (SEQUENCE.decode() if scenario.kind == "embed-miss" else "always the same")


def _gateway(scenario: Scenario) -> tuple[str, bytes, bytes]:
    path = _GATEWAY_PATHS[scenario.kind]
    if scenario.embeddings:
        return path, _dumps({"model": "phi3", "input": _embed_input(scenario)}), b""
    model = "paced" if scenario.kind == "paced" else "phi3"
    body: dict[str, object] = {"model": model, "messages": _MESSAGES, "max_tokens": scenario.tokens}
    body["stream"] = scenario.streams
    return path, _dumps(body), SSE_TOKEN if scenario.streams else b""


def _ollama(scenario: Scenario) -> tuple[str, bytes, bytes]:
    if scenario.embeddings:
        return "/api/embed", _dumps({"model": "phi3:latest", "input": _embed_input(scenario)}), b""
    body = {
        "model": "paced:latest" if scenario.kind == "paced" else "phi3:latest",
        "messages": _MESSAGES,
        "stream": scenario.streams,
        "options": {"num_predict": scenario.tokens},
    }
    return "/api/chat", _dumps(body), b""
