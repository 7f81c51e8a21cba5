"""The W3C traceparent a client sends: continued when valid, a new trace otherwise; what goes on to Ollama."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from starlette.requests import Request

from citadel_proxy.config.schema import Tracing
from citadel_proxy.observability.tracing import RequestTrace, RequestTracer

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"


def begin(headers: dict[str, str], ratio: float = 1.0) -> RequestTrace:
    scope: dict[str, Any] = {
        "type": "http",
        "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
        "state": {},
    }
    tracer = RequestTracer(Tracing(enabled=True, sample_ratio=ratio), export=None)  # type: ignore[arg-type]
    return tracer.begin(Request(scope), "chat", "/v1/chat/completions")


def test_a_valid_traceparent_is_continued() -> None:
    trace = begin({"traceparent": f"00-{TRACE}-{SPAN}-01", "tracestate": "vendor=abc"}, ratio=0)
    assert (trace.ids()[0], trace.parent_id, trace.sampled) == (TRACE, int(SPAN, 16), True)
    sent = trace.headers_for(0x1234)
    assert sent == {"traceparent": f"00-{TRACE}-0000000000001234-01", "tracestate": "vendor=abc"}


def test_the_clients_unsampled_flag_is_kept() -> None:
    trace = begin({"traceparent": f"00-{TRACE}-{SPAN}-00"})
    assert not trace.sampled and trace.headers_for(1)["traceparent"].endswith("-00")


@pytest.mark.parametrize(
    "header",
    [
        f"ff-{TRACE}-{SPAN}-01",  # version ff is invalid
        f"00-{'0' * 32}-{SPAN}-01",  # all-zero trace id
        f"00-{TRACE}-{'0' * 16}-01",  # all-zero span id
        f"00-{TRACE.upper()}-{SPAN}-01",  # upper case hex
        f"00-{TRACE}-{SPAN}-01-extra",  # version 00 has no more fields
        "garbage",
    ],
)
def test_an_invalid_traceparent_starts_a_new_trace(header: str) -> None:
    trace = begin({"traceparent": header, "tracestate": "vendor=abc"})
    assert trace.parent_id is None and trace.ids()[0] != TRACE and trace.trace_state is None
    assert trace.sampled  # ratio 1


def test_a_later_version_may_carry_more_fields() -> None:
    trace = begin({"traceparent": f"01-{TRACE}-{SPAN}-01-more"})
    assert trace.ids()[0] == TRACE


def test_a_tracestate_that_is_not_printable_ascii_is_not_passed_on() -> None:
    trace = begin({"traceparent": f"00-{TRACE}-{SPAN}-01", "tracestate": "vendor=\x01bad"})
    assert trace.trace_state is None and "tracestate" not in trace.headers_for(1)


def test_ratio_zero_samples_nothing_of_its_own() -> None:
    assert not any(begin({}, ratio=0).sampled for _ in range(50))


@pytest.mark.parametrize("endpoint", ["collector:4318", "ftp://collector", "http://"])
def test_an_endpoint_that_is_not_a_url_is_refused(endpoint: str) -> None:
    with pytest.raises(msgspec.ValidationError, match="endpoint"):
        msgspec.convert({"enabled": True, "endpoint": endpoint}, Tracing)
