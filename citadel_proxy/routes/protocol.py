"""Routes of the client protocols beside OpenAI's (Ollama's own API, Anthropic's Messages): each is a
`WireProtocol` (decode, whole answer, stream encoder, error shape) run by one pipeline handler."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp

from citadel_proxy import errors
from citadel_proxy.config.schema import Gateway
from citadel_proxy.http.body import decode, read_body
from citadel_proxy.http.front import Endpoint
from citadel_proxy.http.json_depth import check_depth
from citadel_proxy.http.responses import ErrorRender, encoded_response, logged_bug, refusal
from citadel_proxy.http.stream_encoder import StreamEncoder
from citadel_proxy.pipeline.options import with_model_defaults
from citadel_proxy.pipeline.request import InferenceRequest
from citadel_proxy.pipeline.types import Completion, Context
from citadel_proxy.routes.inference import admit, caller, complete_logged, open_stream, whole
from citadel_proxy.services import Services

_encode = msgspec.json.Encoder().encode


class _Body(Protocol):
    @property
    def model(self) -> str: ...
    @property
    def stream(self) -> bool | None: ...


B = TypeVar("B", bound=_Body)


@dataclass(frozen=True, slots=True)
class Decoded:
    """A body translated: the neutral request, and the model name as the client wrote it."""

    request: InferenceRequest
    model_requested: str


@dataclass(frozen=True, slots=True)
class WireProtocol:
    # The body, the model router and the pipeline's stream default -> the neutral request.
    decode: Callable[[bytes, Services, bool], Decoded]
    answer: Callable[[Context, Completion], bytes]
    encoder: Callable[[Context], StreamEncoder]
    error_body: ErrorRender
    media_type: bytes = b"application/json"


def body_decoder(
    body_type: type[B], translate: Callable[[B, str, bool], InferenceRequest]
) -> Callable[[bytes, Services, bool], Decoded]:
    """A `WireProtocol.decode`: the body as `body_type`, its model routed, its stream flag or the default."""
    decoder = msgspec.json.Decoder(body_type)

    def decode_body(body: bytes, services: Services, stream_default: bool) -> Decoded:
        wire = decode(body, decoder)
        stream = wire.stream if wire.stream is not None else stream_default
        return Decoded(translate(wire, services.models.resolve(wire.model), stream), wire.model)

    return decode_body


def protocol_endpoint(protocol: WireProtocol, format_name: str) -> Endpoint:
    """The endpoint of every route a pipeline of `format: <format_name>` lists; errors in its shape."""

    async def endpoint(request: Request) -> Response | ASGIApp:
        try:
            return await _serve(request, protocol, format_name)
        except errors.GatewayError as error:
            return refusal(request, error, protocol.error_body)
        except Exception as exc:
            return refusal(request, logged_bug(exc), protocol.error_body)

    return endpoint


async def _serve(request: Request, protocol: WireProtocol, format_name: str) -> Response | ASGIApp:
    services: Services = request.state.services
    route = request.scope["path"]
    built = services.pipelines.current.by_route.get(route)
    if built is None or built.spec.format != format_name:
        raise errors.NotFound(f"no {format_name} pipeline serves {route} since the last reload")
    tracer = services.tracing
    trace = None if tracer is None else tracer.begin(request, built.spec.name, route)
    principal = await admit(request, built, trace)
    gateway = services.config.gateway
    decoded = protocol.decode(
        await read_body(request, gateway.max_body_bytes), services, built.spec.stream_default
    )
    neutral = with_model_defaults(decoded.request, services.models, built.spec)
    check_limits(neutral, gateway)
    request_id, client = caller(request)
    ctx = Context(
        request_id, built.spec, route, client, request.headers, neutral,
        decoded.model_requested, neutral.model, neutral.stream, True,
    )  # fmt: skip
    ctx.principal, ctx.trace = principal, trace
    ctx.response_headers["X-Request-ID"] = request_id  # no middleware adds it on http.front's short way
    request.state.access_logged = True
    if ctx.stream:
        return open_stream(ctx, built, services, protocol.encoder(ctx))
    completion = whole(await complete_logged(request, ctx, built, services.deadlines))
    body = protocol.answer(ctx, completion)
    return encoded_response(body, protocol.media_type, headers=ctx.response_headers)


def check_limits(request: InferenceRequest, limits: Gateway) -> None:
    """The gateway's limits on a neutral request: messages, output tokens, depth of free-form JSON."""
    messages = request.messages or ()
    if len(messages) > limits.max_messages:
        raise errors.InvalidRequest(
            f"messages: at most {limits.max_messages} messages per request (got {len(messages)})",
            param="messages",
            code="too_many_messages",
        )
    options = request.options
    if options is not None and (options.num_predict or 0) > limits.max_output_tokens:
        raise errors.InvalidRequest(
            f"the output token limit is at most {limits.max_output_tokens} (gateway.max_output_tokens)",
            param="max_tokens",
        )
    depth = limits.max_json_depth
    if options is not None and options.extra:
        check_depth(_encode(options.extra), depth, "options")
    for raw, param in ((request.tools, "tools"), (request.format, "format")):
        if raw is not None:
            check_depth(raw, depth, param)
    for i, message in enumerate(messages):
        for j, call in enumerate(message.tool_calls or ()):
            check_depth(call.function.arguments, depth, f"messages[{i}].tool_calls[{j}].function.arguments")
