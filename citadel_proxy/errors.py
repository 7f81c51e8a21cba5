"""Every error the gateway reports to a client, and the one place that turns it into a response.

    GatewayError                      500 api_error / internal_error
    ├── InvalidRequest                400 invalid_request_error (names the field in `param`)
    │   ├── InvalidJSON               400 invalid_json
    │   ├── UnsupportedParameter      400 unsupported_parameter
    │   └── UnknownAgentType          400 unknown_agent_type
    ├── AuthenticationFailed          401 authentication_error (WWW-Authenticate: Bearer)
    ├── PermissionDenied              403 permission_error
    ├── NotFound                      404 not_found_error
    │   └── ModelNotFound             404 model_not_found
    ├── MethodNotAllowed              405 method_not_allowed
    ├── RequestTimeout                408 request_timeout (headers not in within gateway.header_timeout_s)
    ├── PayloadTooLarge               413 payload_too_large
    ├── RateLimited                   429 rate_limit_exceeded (Retry-After)
    ├── HeadersTooLarge               431 request_header_fields_too_large
    ├── ClientClosedRequest           499 client_closed (nginx's code; nobody is left to read it)
    ├── UpstreamError                 502 upstream_error (Ollama failed or said something we cannot use)
    │   ├── UpstreamUnavailable       502 upstream_unavailable (could not connect)
    │   ├── UpstreamMalformed         502 upstream_malformed
    │   ├── UpstreamIncomplete        502 upstream_incomplete (stream ended without done)
    │   ├── UpstreamTooLarge          502 upstream_too_large (an answer or line over its configured cap)
    │   └── UpstreamTimeout           504 upstream_timeout (Ollama silent past ollama.service.timeout)
    ├── ServiceUnavailable            503 service_unavailable
    └── DeadlineExceeded              504 timeout

Third-party exceptions are translated where they are raised (upstream client, stores); route code only
ever sees these classes.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec


class ErrorBody(msgspec.Struct, frozen=True):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorEnvelope(msgspec.Struct, frozen=True):
    error: ErrorBody


_encode = msgspec.json.Encoder().encode


class GatewayError(Exception):
    status: int = 500
    type: str = "api_error"
    code: str = "internal_error"
    # What an operator may see beyond the client's message (internal addresses, system errors): shown on
    # admin-only routes, never in a client's answer.
    detail: str = ""

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers: dict[str, str] = dict(headers or {})

    def body(self) -> ErrorEnvelope:
        return ErrorEnvelope(ErrorBody(self.message, self.type, self.param, self.code))

    def to_json(self) -> bytes:
        return _encode(self.body())


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class InvalidJSON(InvalidRequest):
    code = "invalid_json"


class UnsupportedParameter(InvalidRequest):
    code = "unsupported_parameter"


class UnknownAgentType(InvalidRequest):
    code = "unknown_agent_type"


class AuthenticationFailed(GatewayError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"

    def __init__(self, message: str, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.headers.setdefault("WWW-Authenticate", "Bearer")


class PermissionDenied(GatewayError):
    status = 403
    type = "permission_error"
    code = "insufficient_scope"
    key_name: str | None = None  # the key that lacks the scope, for the audit of refusals


class NotFound(GatewayError):
    status = 404
    type = "not_found_error"
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class MethodNotAllowed(GatewayError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class RequestTimeout(GatewayError):
    status = 408
    type = "invalid_request_error"
    code = "request_timeout"


class PayloadTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"
    code = "payload_too_large"


class RateLimited(GatewayError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class HeadersTooLarge(GatewayError):
    status = 431
    type = "invalid_request_error"
    code = "request_header_fields_too_large"


class ClientClosedRequest(GatewayError):
    status = 499
    type = "api_error"
    code = "client_closed"


class Superseded(GatewayError):
    status = 409
    type = "invalid_request_error"
    code = "superseded"


class UpstreamError(GatewayError):
    status = 502
    type = "api_error"
    code = "upstream_error"


class UpstreamUnavailable(UpstreamError):
    code = "upstream_unavailable"


class UpstreamMalformed(UpstreamError):
    code = "upstream_malformed"


class UpstreamIncomplete(UpstreamError):
    code = "upstream_incomplete"


class UpstreamTooLarge(UpstreamError):
    code = "upstream_too_large"


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"


class ServiceUnavailable(GatewayError):
    status = 503
    type = "api_error"
    code = "service_unavailable"


class DeadlineExceeded(GatewayError):
    status = 504
    type = "api_error"
    code = "timeout"


def reason(exc: BaseException) -> str:
    """What went wrong, for a message: the exception's text, else its type (a bare TimeoutError() from
    asyncio.timeout has no text, and an exception object is always true, so `exc or ...` never falls
    back)."""
    return str(exc) or type(exc).__name__


def internal_error() -> GatewayError:
    """What a client is told of a bug of ours: the traceback goes to the log, never to the client."""
    return GatewayError("internal error; the gateway log has the details")


def sse_error_event(error: GatewayError) -> bytes:
    """The SSE form of an error, for failures after a stream's headers went out."""
    return b"data: " + error.to_json() + b"\n\n"
