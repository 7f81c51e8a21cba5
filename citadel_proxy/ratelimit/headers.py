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


def rate_limit_headers(decision: Decision) -> dict[str, str]:
    headers: dict[str, str] = {}
    for names, window in ((_REQUESTS, decision.requests), (_TOKENS, decision.tokens)):
        if window is not None:
            limit, remaining, reset = names
            headers[limit] = str(window.limit)
            headers[remaining] = str(window.remaining)
            headers[reset] = duration(window.reset_s)
    if not decision.allowed:
        # Whole seconds, rounded up: a client that waits this long is admitted.
        headers["retry-after"] = str(max(1, math.ceil(decision.retry_after_s)))
    return headers


def _names(kind: str) -> tuple[str, str, str]:
    return f"x-ratelimit-limit-{kind}", f"x-ratelimit-remaining-{kind}", f"x-ratelimit-reset-{kind}"


_REQUESTS, _TOKENS = _names("requests"), _names("tokens")
