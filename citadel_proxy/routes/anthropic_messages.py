"""Anthropic's Messages API: `POST /v1/messages` through pipelines of `format: anthropic-messages`, and
`POST /v1/messages/count_tokens`, an estimate (Ollama has no tokenizer endpoint). Errors in Anthropic's
shape; keys as `x-api-key` (what the SDKs send) or Bearer."""

from __future__ import annotations

import math

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from citadel_proxy import errors
from citadel_proxy.anthropic.answers import MessageEvents, error_body, message
from citadel_proxy.anthropic.translate import messages_to_request
from citadel_proxy.anthropic.wire import MessagesBody, TokenCount
from citadel_proxy.auth.guard import refuse_locked_out, require_key
from citadel_proxy.http.body import decode, read_body
from citadel_proxy.http.responses import json_response, shaped_error
from citadel_proxy.routes.protocol import WireProtocol, body_decoder
from citadel_proxy.services import Services

_decoder = msgspec.json.Decoder(MessagesBody)
# A rough rule for English text and code with the tokenizers of current open models.
_CHARS_PER_TOKEN = 4


MESSAGES = WireProtocol(body_decoder(MessagesBody, messages_to_request), message, MessageEvents, error_body)


async def count_tokens(request: Request) -> Response:
    try:
        return await _count_tokens(request)
    except errors.GatewayError as error:
        return shaped_error(request, error, error_body)


async def _count_tokens(request: Request) -> Response:
    services: Services = request.state.services
    refuse_locked_out(request)
    principal = await require_key(services.key_store, request.headers, "inference")
    request.state.key_name = principal.name
    body = await read_body(request, services.config.gateway.max_body_bytes)
    # max_tokens is not required here, as in Anthropic's API.
    wire = decode(body, _decoder)
    neutral = messages_to_request(
        msgspec.structs.replace(wire, max_tokens=1), services.models.resolve(wire.model), False
    )
    chars = sum(len(m.content) + len(m.thinking) for m in neutral.messages or ())
    chars += len(neutral.tools or b"")
    tokens = math.ceil(chars / _CHARS_PER_TOKEN)
    return json_response(TokenCount(input_tokens=tokens), headers={"X-Token-Count": "estimate"})
