"""OpenAI's rate-limit headers, for 429s and for successful responses alike."""

from __future__ import annotations

import math

from citadel_proxy.ratelimit.bucket import Decision


def duration(seconds: float) -> str:
    """OpenAI's reset format: `20ms`, `1s`, `6m0s`, `1h2m3s`."""
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    whole = math.ceil(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def rate_limit_headers(decision: Decision, headers: dict[str, str] | None = None) -> dict[str, str]:
    """The decision's headers, added to `headers` (an answer's own, made once) or to a new dict."""
    # Written out per window rather than looped over: these headers are made for every request.
    if headers is None:
        headers = {}
    requests, tokens = decision.requests, decision.tokens
    if requests is not None:
        headers["x-ratelimit-limit-requests"] = str(requests.limit)
        headers["x-ratelimit-remaining-requests"] = str(requests.remaining)
        headers["x-ratelimit-reset-requests"] = duration(requests.reset_s)
    if tokens is not None:
        headers["x-ratelimit-limit-tokens"] = str(tokens.limit)
        headers["x-ratelimit-remaining-tokens"] = str(tokens.remaining)
        headers["x-ratelimit-reset-tokens"] = duration(tokens.reset_s)
    if not decision.allowed:
        # Whole seconds, rounded up: a client that waits this long is admitted.
        headers["retry-after"] = str(max(1, math.ceil(decision.retry_after_s)))
    return headers
