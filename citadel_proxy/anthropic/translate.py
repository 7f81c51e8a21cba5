"""Pure functions from Anthropic's Messages body to the pipeline's own request (pipeline/request.py)."""

from __future__ import annotations

import msgspec

from citadel_proxy import errors
from citadel_proxy.anthropic.wire import (
    Block,
    ImageBlock,
    MessageIn,
    MessagesBody,
    RedactedThinkingBlock,
    TextBlock,
    ThinkingBlock,
    Tool,
    ToolResultBlock,
    ToolUseBlock,
    UrlSource,
)
from citadel_proxy.pipeline.request import InferenceRequest, Message, Options
from citadel_proxy.pipeline.types import ToolCall, ToolFunction

_encode = msgspec.json.encode


def messages_to_request(body: MessagesBody, model: str, stream: bool) -> InferenceRequest:
    if body.max_tokens is None:
        raise errors.InvalidRequest("max_tokens: field required", param="max_tokens")
    messages: list[Message] = []
    if body.system:
        system = body.system if isinstance(body.system, str) else "\n".join(b.text for b in body.system)
        messages.append(Message(role="system", content=system))
    tool_names: dict[str, str] = {}
    for i, message in enumerate(body.messages):
        messages += _turn(message, f"messages[{i}]", tool_names)
    return InferenceRequest(
        kind="chat",
        model=model,
        stream=stream,
        messages=messages,
        tools=_tools(body),
        think=None if body.thinking is None else body.thinking.type != "disabled",
        options=Options(
            num_predict=body.max_tokens,
            temperature=body.temperature,
            top_p=body.top_p,
            stop=body.stop_sequences or None,
            extra={"top_k": body.top_k} if body.top_k is not None else None,
        ),
    )


def _tools(body: MessagesBody) -> msgspec.Raw | None:
    choice = body.tool_choice
    if not body.tools or (choice is not None and choice.type == "none"):
        return None
    if choice is not None and choice.type != "auto":
        raise errors.UnsupportedParameter(
            f"tool_choice {choice.type!r}: Ollama cannot be made to call a tool; use auto or none",
            param="tool_choice",
        )
    return msgspec.Raw(_encode([_tool(tool, i) for i, tool in enumerate(body.tools)]))


def _tool(tool: Tool, index: int) -> dict[str, object]:
    if tool.type not in (None, "custom"):
        raise errors.UnsupportedParameter(
            f"tools[{index}]: server tools ({tool.type}) are not available here", param=f"tools[{index}]"
        )
    function: dict[str, object] = {"name": tool.name, "parameters": tool.input_schema}
    if tool.description:
        function["description"] = tool.description
    return {"type": "function", "function": function}


def _turn(message: MessageIn, at: str, tool_names: dict[str, str]) -> list[Message]:
    """One Anthropic message: tool results become tool messages of their own, as Ollama takes them."""
    if isinstance(message.content, str):
        return [Message(role=message.role, content=message.content)]
    texts: list[str] = []
    thinking: list[str] = []
    images: list[str] = []
    calls: list[ToolCall] = []
    results: list[Message] = []
    for j, block in enumerate(message.content):
        _block(block, f"{at}.content[{j}]", texts, thinking, images, calls, results, tool_names)
    out = results[:]
    if texts or images or calls or thinking or not results:
        out.append(
            Message(
                role=message.role,
                content="\n".join(texts),
                thinking="\n".join(thinking),
                images=images or None,
                tool_calls=calls or None,
            )
        )
    return out


def _block(
    block: Block,
    at: str,
    texts: list[str],
    thinking: list[str],
    images: list[str],
    calls: list[ToolCall],
    results: list[Message],
    tool_names: dict[str, str],
) -> None:
    if isinstance(block, TextBlock):
        texts.append(block.text)
    elif isinstance(block, ImageBlock):
        images.append(_image(block, at))
    elif isinstance(block, ToolUseBlock):
        tool_names[block.id] = block.name
        arguments = msgspec.Raw(_encode(block.input))
        calls.append(ToolCall(function=ToolFunction(name=block.name, arguments=arguments), id=block.id))
    elif isinstance(block, ToolResultBlock):
        results.append(_tool_result(block, at, tool_names))
    elif isinstance(block, ThinkingBlock):
        thinking.append(block.thinking)
    elif not isinstance(block, RedactedThinkingBlock):  # redacted thinking means nothing to Ollama
        raise errors.InvalidRequest("unknown content block", param=at)


def _tool_result(block: ToolResultBlock, at: str, tool_names: dict[str, str]) -> Message:
    if isinstance(block.content, str):
        text, images = block.content, None
    else:
        text = "\n".join(b.text for b in block.content if isinstance(b, TextBlock))
        found = [_image(b, f"{at}.content") for b in block.content if isinstance(b, ImageBlock)]
        images = found or None
    if block.is_error:
        text = f"Error: {text}"
    return Message(
        role="tool",
        content=text,
        images=images,
        tool_name=tool_names.get(block.tool_use_id),
        tool_call_id=block.tool_use_id,
    )


def _image(block: ImageBlock, at: str) -> str:
    if isinstance(block.source, UrlSource):
        raise errors.InvalidRequest(
            "images must be sent as base64 (source.type: base64); remote URLs are not fetched",
            param=f"{at}.source",
        )
    return block.source.data
