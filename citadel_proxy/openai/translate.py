"""Pure functions from OpenAI's request shapes to the pipeline's own request (pipeline/request.py)."""

from __future__ import annotations

import msgspec

from citadel_proxy import errors
from citadel_proxy.http.json_depth import too_deep
from citadel_proxy.openai.refusals import refuse_unhonourable_chat, refuse_unhonourable_completion
from citadel_proxy.openai.wire import (
    ChatMessage,
    ChatRequest,
    CompletionRequest,
    ContentPart,
    ImagePart,
    ResponseFormat,
    SamplingRequest,
    ToolCallIn,
)
from citadel_proxy.pipeline.options import options_from_map, set_or_none
from citadel_proxy.pipeline.request import InferenceRequest, Message, Options
from citadel_proxy.pipeline.types import ToolCall, ToolFunction

_JSON_FORMAT = msgspec.Raw(b'"json"')
_THINK: dict[str, bool | str] = {
    "none": False,
    "minimal": "low",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "max": "max",
}
_THINK |= {"xhigh": "max", "ultra": "max"}
_DATA_IMAGE_PREFIXES: tuple[str, ...] = (
    "data:image/png;base64,",
    "data:image/jpeg;base64,",
    "data:image/jpg;base64,",
)
_DATA_IMAGE_PREFIXES += ("data:image/webp;base64,", "data:image/gif;base64,", "data:;base64,")


def chat_to_request(req: ChatRequest, model: str, stream: bool) -> InferenceRequest:
    refuse_unhonourable_chat(req)
    tool_names: dict[str, str] = {}
    messages = [_message(m, i, tool_names) for i, m in enumerate(req.messages)]
    return InferenceRequest(
        kind="chat",
        model=model,
        messages=messages,
        stream=stream,
        tools=_tools(req),
        format=_format(req.response_format),
        options=_options(req, req.max_completion_tokens or req.max_tokens),
        think=_think(req.reasoning_effort),
        keep_alive=req.keep_alive,
    )


def completion_to_request(req: CompletionRequest, model: str, stream: bool) -> InferenceRequest:
    refuse_unhonourable_completion(req)
    prompt = req.prompt
    if isinstance(prompt, list):
        if len(prompt) != 1:
            raise errors.UnsupportedParameter("prompt must be one string", param="prompt")
        prompt = prompt[0]
    return InferenceRequest(
        kind="generate",
        model=model,
        prompt=prompt,
        suffix=req.suffix or None,
        stream=stream,
        options=_options(req, req.max_tokens),
        keep_alive=req.keep_alive,
    )


def _tools(req: ChatRequest) -> msgspec.Raw | None:
    # tool_choice "none": the model is not offered the tools, so it cannot call one.
    if not req.tools or req.tool_choice == "none":
        return None
    return msgspec.Raw(msgspec.json.encode(req.tools))


def _options(req: SamplingRequest, max_tokens: int | None) -> Options | None:
    # Left-out values stay unset, so the model's own Modelfile defaults apply (Ollama's /v1 forces 1.0).
    stop = [req.stop] if isinstance(req.stop, str) else req.stop
    runner = {"top_k": req.top_k, "min_p": req.min_p, "repeat_penalty": req.repeat_penalty}
    runner["num_ctx"] = req.num_ctx  # Ollama's own settings, named at the top level by clients that know them
    if req.options:
        named = {
            "num_predict": max_tokens,
            "temperature": req.temperature,
            "top_p": req.top_p,
            "seed": req.seed,
            "stop": stop or None,
            "frequency_penalty": req.frequency_penalty,
            "presence_penalty": req.presence_penalty,
        } | runner
        # An `options` map (Ollama's shape) under the top-level fields, which win; the map is free-form
        # and checked by options_from_map.
        options = options_from_map(req.options | {k: v for k, v in named.items() if v is not None})
        return set_or_none(options)
    # The top-level fields are typed and checked by the decoder already.
    extra = {k: v for k, v in runner.items() if v is not None} or None
    options = Options(
        num_predict=max_tokens,
        temperature=req.temperature,
        top_p=req.top_p,
        seed=req.seed,
        stop=stop or None,
        frequency_penalty=req.frequency_penalty,
        presence_penalty=req.presence_penalty,
        extra=extra,
    )
    return set_or_none(options)


def _format(response_format: ResponseFormat | None) -> msgspec.Raw | None:
    if response_format is None or response_format.type == "text":
        return None
    if response_format.type == "json_object":
        return _JSON_FORMAT
    schema = response_format.json_schema.schema if response_format.json_schema else None
    if not schema:
        raise errors.InvalidRequest(
            "response_format json_schema needs json_schema.schema", param="response_format.json_schema"
        )
    return schema


def _think(effort: str | None) -> bool | str | None:
    if effort is None:
        return None
    try:
        return _THINK[effort]
    except KeyError:
        allowed = ", ".join(_THINK)
        raise errors.InvalidRequest(
            f"reasoning_effort must be one of {allowed}", param="reasoning_effort"
        ) from None


def _message(message: ChatMessage, index: int, tool_names: dict[str, str]) -> Message:
    at = f"messages[{index}]"
    text, images = _content(message.content, at)
    tool_calls = None
    if message.tool_calls:
        tool_calls = [_tool_call(call, f"{at}.tool_calls[{j}]") for j, call in enumerate(message.tool_calls)]
        for call in message.tool_calls:
            if call.id:
                tool_names[call.id] = call.function.name
    role = "system" if message.role == "developer" else message.role
    tool_name = None
    if role == "tool":
        tool_name = tool_names.get(message.tool_call_id or "") or message.name
    return Message(
        role=role,
        content=text,
        thinking=message.reasoning or "",
        images=images,
        tool_calls=tool_calls,
        tool_name=tool_name,
        tool_call_id=message.tool_call_id if role == "tool" else None,
    )


def _content(content: str | list[ContentPart] | None, at: str) -> tuple[str, list[str] | None]:
    if content is None:
        return "", None
    if isinstance(content, str):
        return content, None
    texts: list[str] = []
    images: list[str] = []
    for j, part in enumerate(content):
        if isinstance(part, ImagePart):
            images.append(_image_data(part.image_url.url, f"{at}.content[{j}].image_url.url"))
        else:
            texts.append(part.text)
    return "\n".join(texts), images or None


def _image_data(url: str, at: str) -> str:
    for prefix in _DATA_IMAGE_PREFIXES:
        if url.startswith(prefix):
            return url[len(prefix) :]
    raise errors.InvalidRequest(
        "images must be sent as base64 data URLs (data:image/png;base64,...); remote URLs are not fetched",
        param=at,
    )


def _tool_call(call: ToolCallIn, at: str) -> ToolCall:
    try:
        arguments = msgspec.json.decode(call.function.arguments)
    except RecursionError:
        raise too_deep(None, f"{at}.function.arguments") from None
    except msgspec.DecodeError:
        raise errors.InvalidRequest(
            "tool call arguments are not valid JSON", param=f"{at}.function.arguments"
        ) from None
    if not isinstance(arguments, dict):
        raise errors.InvalidRequest(
            "tool call arguments must be a JSON object", param=f"{at}.function.arguments"
        )
    return ToolCall(
        function=ToolFunction(
            name=call.function.name, arguments=msgspec.Raw(call.function.arguments.encode())
        ),
        id=call.id,
    )
