"""The bucket arithmetic and the headers it turns into, without any backend."""

from __future__ import annotations

import pytest

from citadel_proxy.ratelimit import Limits, lowest, rate_limit_headers
from citadel_proxy.ratelimit.bucket import Bucket, decision
from citadel_proxy.ratelimit.headers import duration


def test_requests_refill_continuously() -> None:
    bucket, limits = Bucket(), Limits(requests_per_minute=3)
    assert [bucket.acquire(limits, 0)[0] for _ in range(4)] == [True, True, True, False]
    allowed, level, _, retry_ms = bucket.acquire(limits, 0)
    assert not allowed and level == 3 and retry_ms == pytest.approx(20_000)
    assert not bucket.acquire(limits, 19_999)[0]
    assert bucket.acquire(limits, 20_000)[0]  # one request drained back after 60 s / 3


def test_tokens_admit_until_exhausted_and_charge_afterwards() -> None:
    bucket, limits = Bucket(), Limits(tokens_per_minute=600)
    assert bucket.acquire(limits, 0)[0]
    bucket.charge(limits, 0, 900)  # a long answer overdraws the bucket
    allowed, _, tokens, retry_ms = bucket.acquire(limits, 0)
    assert not allowed and tokens == 900
    assert retry_ms == pytest.approx((900 - 600 + 1) * 100)  # 10 tokens per second drain
    assert bucket.acquire(limits, 30_100)[0]


def test_lower_limit_wins() -> None:
    assert lowest(10, 5) == 5
    assert lowest(None, 7) == 7
    assert lowest(None, None) is None


def test_headers() -> None:
    limits = Limits(requests_per_minute=60, tokens_per_minute=1000)
    ok = rate_limit_headers(decision(limits, True, 1, 250.5, 0, "local"))
    assert ok == {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-requests": "59",
        "x-ratelimit-reset-requests": "1s",
        "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "749",
        "x-ratelimit-reset-tokens": "16s",
    }
    refused = rate_limit_headers(decision(limits, False, 60, 0, 1200, "local"))
    assert refused["retry-after"] == "2" and refused["x-ratelimit-remaining-requests"] == "0"
    assert "x-ratelimit-limit-tokens" not in rate_limit_headers(decision(Limits(5), True, 1, 0, 0, "x"))


def test_remaining_is_rounded_down_and_never_below_zero() -> None:
    limits = Limits(requests_per_minute=60, tokens_per_minute=1000)
    over = rate_limit_headers(decision(limits, False, 61.5, 1200.7, 1500, "local"))
    assert over["x-ratelimit-remaining-requests"] == "0" and over["x-ratelimit-remaining-tokens"] == "0"
    partly = rate_limit_headers(decision(limits, True, 1.5, 999.2, 0, "local"))
    assert partly["x-ratelimit-remaining-requests"] == "58" and partly["x-ratelimit-remaining-tokens"] == "0"


def test_headers_join_an_answers_own() -> None:
    headers = {"X-Conversation-ID": "c1"}
    assert rate_limit_headers(decision(Limits(5), True, 1, 0, 0, "local"), headers) is headers
    assert headers == {
        "X-Conversation-ID": "c1",
        "x-ratelimit-limit-requests": "5",
        "x-ratelimit-remaining-requests": "4",
        "x-ratelimit-reset-requests": "12s",
    }


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0ms"), (0.0201, "21ms"), (1, "1s"), (59.2, "1m0s"), (360, "6m0s"), (3723, "1h2m3s")],
)
def test_durations_in_openai_format(seconds: float, text: str) -> None:
    assert duration(seconds) == text
