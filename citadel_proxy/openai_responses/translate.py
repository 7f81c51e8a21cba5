"""Pure functions from a Responses API body to the pipeline's own request (pipeline/request.py)."""

from __future__ import annotations

import msgspec

from citadel_proxy import errors
from citadel_proxy.openai_responses.wire import ContentPart, InputItem, ResponsesBody
from citadel_proxy.pipeline.options import set_or_none
from citadel_proxy.pipeline.request import InferenceRequest, Message, Options
from citadel_proxy.pipeline.types import ToolCall, ToolFunction

_STATELESS = (
    "this gateway is stateless: send store: false (or leave it out) and the whole conversation in `input`"
)
_THINK: dict[str, bool | str] = {
    "none": False,
    "minimal": "low",
    "low": "low",
    "medium": "medium",
    "high": "high",
}
_THINK["xhigh"] = "high"


def responses_to_request(body: ResponsesBody, model: str, stream: bool) -> InferenceRequest:
    _refuse_state(body)
    messages = [Message(role="system", content=body.instructions)] if body.instructions else []
    if isinstance(body.input, str):
        messages.append(Message(role="user", content=body.input))
    else:
        tool_names: dict[str, str] = {}
        for i, item in enumerate(body.input):
            message = _item(item, f"input[{i}]", tool_names)
            if message is not None:
                messages.append(message)
    options = Options(num_predict=body.max_output_tokens, temperature=body.temperature, top_p=body.top_p)
    return InferenceRequest(
        kind="chat",
        model=model,
        stream=stream,
        messages=messages,
        tools=_tools(body),
        format=_format(body),
        think=_think(body),
        options=set_or_none(options),
    )


def _refuse_state(body: ResponsesBody) -> None:
    for param, asked in (
        ("store", body.store is True),
        ("previous_response_id", body.previous_response_id is not None),
        ("conversation", body.conversation is not None),
    ):
        if asked:
            raise errors.UnsupportedParameter(f"{param}: {_STATELESS}", param=param)


def _item(item: InputItem, at: str, tool_names: dict[str, str]) -> Message | None:
    kind = item.type or "message"
    if kind == "message":
        text, images = _content(item.content, at)
        role = "system" if item.role == "developer" else (item.role or "user")
        return Message(role=role, content=text, images=images)
    if kind == "function_call":
        name, call_id = item.name or "", item.call_id or ""
        tool_names[call_id] = name
        arguments = msgspec.Raw((item.arguments or "{}").encode())
        call = ToolCall(function=ToolFunction(name=name, arguments=arguments), id=call_id or None)
        return Message(role="assistant", tool_calls=[call])
    if kind == "function_call_output":
        output, _ = _content(item.output, f"{at}.output")
        call_id = item.call_id or ""
        return Message(
            role="tool", content=output, tool_name=tool_names.get(call_id), tool_call_id=call_id or None
        )
    if kind == "reasoning":
        return None  # the model's own earlier reasoning: Ollama is not given it back
    raise errors.UnsupportedParameter(f"{at}: items of type {kind!r} are not supported", param=f"{at}.type")


def _content(content: str | list[ContentPart] | None, at: str) -> tuple[str, list[str] | None]:
    if content is None or isinstance(content, str):
        return content or "", None
    texts: list[str] = []
    images: list[str] = []
    for j, part in enumerate(content):
        if part.type == "input_image":
            images.append(_image(part.image_url or "", f"{at}.content[{j}].image_url"))
        else:
            texts.append(part.text or part.refusal or "")
    return "\n".join(texts), images or None


def _image(url: str, at: str) -> str:
    _, found, data = url.partition(";base64,")
    if not (url.startswith("data:") and found):
        raise errors.InvalidRequest(
            "images must be sent as base64 data URLs (data:image/png;base64,...); remote URLs are not "
            "fetched",
            param=at,
        )
    return data


def _tools(body: ResponsesBody) -> msgspec.Raw | None:
    choice = body.tool_choice
    if not body.tools or choice == "none":
        return None
    if choice not in (None, "auto"):
        raise errors.UnsupportedParameter(
            "tool_choice: only auto and none can be honoured", param="tool_choice"
        )
    declared = []
    for i, tool in enumerate(body.tools):
        if tool.type != "function" or not tool.name:
            raise errors.UnsupportedParameter(
                f"tools[{i}]: only function tools are available here (got {tool.type})", param=f"tools[{i}]"
            )
        function: dict[str, object] = {"name": tool.name, "parameters": tool.parameters or {"type": "object"}}
        if tool.description:
            function["description"] = tool.description
        declared.append({"type": "function", "function": function})
    return msgspec.Raw(msgspec.json.encode(declared))


def _format(body: ResponsesBody) -> msgspec.Raw | None:
    fmt = body.text.format if body.text is not None else None
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return msgspec.Raw(b'"json"')
    if fmt.type == "json_schema" and fmt.schema:
        return msgspec.Raw(msgspec.json.encode(fmt.schema))
    raise errors.InvalidRequest(
        "text.format: text, json_object, or json_schema with a schema", param="text.format"
    )


def _think(body: ResponsesBody) -> bool | str | None:
    effort = body.reasoning.effort if body.reasoning is not None else None
    if effort is None:
        return None
    if effort not in _THINK:
        raise errors.InvalidRequest(
            f"reasoning.effort must be one of {', '.join(_THINK)}", param="reasoning.effort"
        )
    return _THINK[effort]
