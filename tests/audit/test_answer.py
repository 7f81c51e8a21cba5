"""The answer an audited stream assembles: what it records, and what an open stream holds meanwhile."""

from __future__ import annotations

from citadel_proxy.audit.records import Answer
from citadel_proxy.pipeline.types import Delta


def test_a_long_stream_is_recorded_whole_and_held_in_few_pieces() -> None:
    answer = Answer()
    tokens = [f"t{i} " for i in range(1000)]
    for start in range(0, 1000, 3):
        answer.add([Delta(content=t, thinking=t.upper()) for t in tokens[start : start + 3]])
    assert "".join(answer.content) == "".join(tokens)
    assert "".join(answer.thinking) == "".join(tokens).upper()
    # One str per token would be a thousand objects of ~50 bytes each beside a few characters.
    assert len(answer.content) < 100 and len(answer.thinking) < 100


def test_a_short_answer_keeps_its_pieces() -> None:
    answer = Answer()
    answer.add([Delta(content="a"), Delta(content=""), Delta(thinking="b")])
    answer.add([Delta(content="c")])
    assert answer.content == ["a", "c"] and answer.thinking == ["b"]
