"""The gateway's limits on a decoded OpenAI request: messages, output tokens, depth of free-form JSON."""

from __future__ import annotations

import msgspec

from citadel_proxy import errors
from citadel_proxy.config.schema import Gateway
from citadel_proxy.http.json_depth import check_depth
from citadel_proxy.openai.wire import ChatRequest, CompletionRequest, SamplingRequest

_encode = msgspec.json.encode


def check_chat(req: ChatRequest, limits: Gateway) -> None:
    if len(req.messages) > limits.max_messages:
        raise errors.InvalidRequest(
            f"messages: at most {limits.max_messages} messages per request (got {len(req.messages)})",
            param="messages",
            code="too_many_messages",
        )
    _check_tokens(req, limits)
    if req.max_completion_tokens is not None and req.max_completion_tokens > limits.max_output_tokens:
        raise _too_many_tokens("max_completion_tokens", limits)
    depth = limits.max_json_depth
    for i, tool in enumerate(req.tools or ()):
        check_depth(tool.function.parameters, depth, f"tools[{i}].function.parameters")
    if req.response_format is not None and req.response_format.json_schema is not None:
        check_depth(req.response_format.json_schema.schema, depth, "response_format.json_schema.schema")
    for i, message in enumerate(req.messages):
        for j, call in enumerate(message.tool_calls or ()):
            at = f"messages[{i}].tool_calls[{j}].function.arguments"
            check_depth(call.function.arguments.encode(), depth, at)


def check_completion(req: CompletionRequest, limits: Gateway) -> None:
    _check_tokens(req, limits)


def _check_tokens(req: SamplingRequest, limits: Gateway) -> None:
    if req.max_tokens is not None and req.max_tokens > limits.max_output_tokens:
        raise _too_many_tokens("max_tokens", limits)
    if req.options:
        check_depth(_encode(req.options), limits.max_json_depth, "options")
        asked = req.options.get("num_predict")
        if isinstance(asked, int | float) and asked > limits.max_output_tokens:
            raise _too_many_tokens("options.num_predict", limits)


def _too_many_tokens(param: str, limits: Gateway) -> errors.InvalidRequest:
    return errors.InvalidRequest(
        f"{param}: at most {limits.max_output_tokens} (gateway.max_output_tokens)", param=param
    )
