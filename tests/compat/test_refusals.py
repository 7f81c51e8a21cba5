"""Fields that change the answer and cannot be honoured get 400 naming the field; harmless ones pass."""

from __future__ import annotations

import json
from typing import Any

import httpx
import msgspec
import openai
import pytest

from citadel_proxy import errors
from citadel_proxy.openai.translate import chat_to_request, completion_to_request
from citadel_proxy.openai.wire import ChatRequest, CompletionRequest
from citadel_proxy.upstream.translate import chat_to_ollama
from tests.core.conftest import AUTH, CHAT, TEST_KEY, Gateway

TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]


def chat(**fields: object) -> ChatRequest:
    return msgspec.json.decode(json.dumps({**CHAT, **fields}), type=ChatRequest)


def completion(**fields: object) -> CompletionRequest:
    return msgspec.json.decode(json.dumps({"model": "c", "prompt": "x", **fields}), type=CompletionRequest)


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"logprobs": True}, "logprobs"),
        ({"logprobs": True, "top_logprobs": 3}, "logprobs"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"logit_bias": {"50256": -100}}, "logit_bias"),
        ({"tools": TOOLS, "tool_choice": "required"}, "tool_choice"),
        ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "f"}}}, "tool_choice"),
        ({"tools": TOOLS, "parallel_tool_calls": False}, "parallel_tool_calls"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
        ({"functions": [{"name": "f", "parameters": {}}]}, "functions"),
        ({"function_call": {"name": "f"}}, "function_call"),
        ({"web_search_options": {}}, "web_search_options"),
        ({"n": 2}, "n"),
    ],
)
def test_chat_fields_that_cannot_be_honoured_are_refused(fields: dict[str, object], param: str) -> None:
    with pytest.raises(errors.UnsupportedParameter) as caught:
        chat_to_request(chat(**fields), "m", False)
    assert caught.value.param == param and caught.value.status == 400


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"logprobs": 0}, "logprobs"),
        ({"logprobs": 5}, "logprobs"),
        ({"logit_bias": {"1": 5}}, "logit_bias"),
        ({"echo": True}, "echo"),
        ({"best_of": 2}, "best_of"),
        ({"n": 3}, "n"),
    ],
)
def test_completion_fields_that_cannot_be_honoured_are_refused(fields: dict[str, object], param: str) -> None:
    with pytest.raises(errors.UnsupportedParameter) as caught:
        completion_to_request(completion(**fields), "c", False)
    assert caught.value.param == param


def test_harmless_and_default_valued_fields_are_accepted() -> None:
    harmless: dict[str, Any] = {
        "logprobs": False, "top_logprobs": 0, "logit_bias": {}, "n": 1, "parallel_tool_calls": True,
        "modalities": ["text"], "function_call": "auto", "user": "u1", "metadata": {"team": "a"},
        "store": False, "service_tier": "auto", "prediction": {"type": "content", "content": "x"},
        "stream_options": {"include_usage": True}, "something_new": {"x": 1},
    }  # fmt: skip
    chat_to_request(chat(**harmless, tools=TOOLS, tool_choice="auto"), "m", True)
    # parallel_tool_calls false without tools cannot change anything.
    chat_to_request(chat(parallel_tool_calls=False), "m", True)
    completion_to_request(
        completion(logprobs=None, echo=False, best_of=1, user="u", logit_bias={}), "c", True
    )


def test_tool_choice_none_is_honoured_by_not_offering_the_tools() -> None:
    def sent(choice: str) -> dict[str, Any]:
        request = chat_to_request(chat(tools=TOOLS, tool_choice=choice), "m", False)
        return json.loads(msgspec.json.encode(chat_to_ollama(request)))  # type: ignore[no-any-return]

    assert "tools" not in sent("none")
    out = sent("auto")
    assert out["tools"] == TOOLS


async def test_logprobs_get_400_through_the_gateway_and_the_sdk(gateway: Gateway) -> None:
    oai = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key=TEST_KEY, max_retries=0)
    with pytest.raises(openai.BadRequestError) as raised:
        await oai.chat.completions.create(
            model="phi3", messages=[{"role": "user", "content": "hi"}], logprobs=True, top_logprobs=2
        )
    assert raised.value.code == "unsupported_parameter"
    assert raised.value.param == "logprobs"  # type: ignore[attr-defined]
    async with httpx.AsyncClient(base_url=gateway.url, headers=AUTH) as http:
        refused = await http.post("/v1/voice/chat/completions", json={**CHAT, "logit_bias": {"7": 1}})
        accepted = await http.post("/v1/chat/completions", json={**CHAT, "user": "u1", "store": False})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "logit_bias"
    assert accepted.status_code == 200
    # Nothing reached Ollama for the refused requests.
    assert gateway.fake.count("/api/chat") == 1


@pytest.mark.parametrize("given", [[1, 2, 3], [[1, 2], [3]], ["text", [1, 2]]])
async def test_token_id_embedding_input_gets_400_saying_what_to_send(gateway: Gateway, given: Any) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, headers=AUTH) as http:
        response = await http.post("/v1/embeddings", json={"model": "nomic-embed-text", "input": given})
    error = response.json()["error"]
    assert response.status_code == 400 and error["param"] == "input"
    assert "check_embedding_ctx_length=False" in error["message"]
    assert gateway.fake.count("/api/embed") == 0
