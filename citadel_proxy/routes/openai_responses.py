"""OpenAI's Responses API, stateless: `POST /v1/responses` through pipelines of `format: openai-responses`.
Errors are OpenAI's error object, as on the other OpenAI routes."""

from __future__ import annotations

from citadel_proxy import errors
from citadel_proxy.openai_responses.answers import ResponseEvents, answer
from citadel_proxy.openai_responses.translate import responses_to_request
from citadel_proxy.openai_responses.wire import ResponsesBody
from citadel_proxy.routes.protocol import WireProtocol, body_decoder

RESPONSES = WireProtocol(
    body_decoder(ResponsesBody, responses_to_request), answer, ResponseEvents, errors.GatewayError.to_json
)
