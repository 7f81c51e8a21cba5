"""OpenAI's Responses API, stateless: `POST /v1/responses` through pipelines of `format: openai-responses`.
Errors are OpenAI's error object, as on the other OpenAI routes."""

from __future__ import annotations

import msgspec

from citadel_proxy import errors
from citadel_proxy.http.body import decode
from citadel_proxy.openai_responses.answers import ResponseEvents, answer
from citadel_proxy.openai_responses.translate import responses_to_request
from citadel_proxy.openai_responses.wire import ResponsesBody
from citadel_proxy.routes.protocol import Decoded, WireProtocol
from citadel_proxy.services import Services

_decoder = msgspec.json.Decoder(ResponsesBody)


def _decode(body: bytes, services: Services, stream_default: bool) -> Decoded:
    wire = decode(body, _decoder)
    stream = wire.stream if wire.stream is not None else stream_default
    return Decoded(responses_to_request(wire, services.models.resolve(wire.model), stream), wire.model)


def _error_body(error: errors.GatewayError) -> bytes:
    return error.to_json()


RESPONSES = WireProtocol(_decode, answer, ResponseEvents, _error_body)
