"""Fixtures of the observability tests: promtool, and a context as the routes build it."""

from __future__ import annotations

import os
import shutil
from typing import Any

import msgspec
import pytest
from starlette.datastructures import Headers

from citadel_proxy.pipeline.request import InferenceRequest
from citadel_proxy.pipeline.types import Context, Principal

SECRET_KEY = "sk-citadel-0123456789abcdefSECRET"
SECRET_TEXT = "my bank password is hunter2-PRIVATE"


@pytest.fixture(scope="session")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        message = "promtool is not installed (Debian: apt-get install prometheus; `make system-deps`)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{message}: CI must check the exposition", pytrace=False)
        pytest.skip(message)
    return path


def make_context(**overrides: Any) -> Context:
    """A chat context carrying a key and message text, as a real request would."""
    request = msgspec.convert(
        {"kind": "chat", "model": "llama3:8b", "messages": [{"role": "user", "content": SECRET_TEXT}]},
        InferenceRequest,
    )
    fields: dict[str, Any] = {
        "request_id": "req-1",
        "pipeline": None,
        "route": "/v1/chat/completions",
        "client": "127.0.0.1",
        "headers": Headers({"authorization": f"Bearer {SECRET_KEY}", "x-api-key": SECRET_KEY}),
        "request": request,
        "model_requested": "llama3",
        "model": "llama3:8b",
        "stream": True,
        "principal": Principal(name="team-a", scopes=frozenset({"inference"})),
    }
    fields.update(overrides)
    return Context(**fields)
