"""The chunking stage's grouping rules: size, max delay, end of stream, buffer bound."""

from __future__ import annotations

import asyncio

from citadel_proxy.pipeline.types import Delta
from citadel_proxy.stages.chunking import ChunkedStream, ChunkingSettings


class Scripted:
    """A TokenStream fed by the test: each item is a batch, or a pause in seconds."""

    def __init__(self, script: list[list[str] | float]) -> None:
        self._script = list(script)
        self.closed = False

    async def read(self) -> list[Delta] | None:
        while self._script:
            item = self._script.pop(0)
            if isinstance(item, float):
                await asyncio.sleep(item)
                continue
            return [Delta(text) for text in item]
        return None

    async def aclose(self) -> None:
        self.closed = True


async def events(stream: ChunkedStream) -> list[list[str]]:
    out = []
    while (batch := await stream.read()) is not None:
        out.append([d.content for d in batch])
    return out


async def test_groups_of_chunk_size_then_the_rest_at_the_end() -> None:
    inner = Scripted([["a", "b", "c"], ["d", "e", "f", "g"]])
    stream = ChunkedStream(inner, ChunkingSettings(chunk_size=3, max_delay_ms=10_000))
    assert await events(stream) == [["abc"], ["def"], ["g"]]
    await stream.aclose()
    assert inner.closed


async def test_size_one_passes_batches_through() -> None:
    stream = ChunkedStream(Scripted([["a", "b"], ["c"]]), ChunkingSettings(chunk_size=1))
    assert await events(stream) == [["a", "b"], ["c"]]


async def test_partial_chunk_flushed_after_max_delay_without_waiting_for_more() -> None:
    # Two tokens, then a long pause: the partial chunk must leave after ~20 ms, not after the pause.
    inner = Scripted([["a", "b"], 5.0, ["c"]])
    stream = ChunkedStream(inner, ChunkingSettings(chunk_size=10, max_delay_ms=20))
    first = await asyncio.wait_for(stream.read(), timeout=1.0)
    assert first is not None and [d.content for d in first] == ["ab"]
    await stream.aclose()


async def test_spec_delay_spelling_is_seconds() -> None:
    assert ChunkingSettings(delay_between_chunks=0.05).max_delay_s == 0.05
    assert ChunkingSettings(max_delay_ms=50).max_delay_s == 0.05


async def test_zero_delay_flushes_every_read() -> None:
    stream = ChunkedStream(Scripted([["a", "b"], ["c"]]), ChunkingSettings(chunk_size=5, max_delay_ms=0))
    assert await events(stream) == [["ab"], ["c"]]


async def test_buffer_size_bounds_events_per_read() -> None:
    stream = ChunkedStream(Scripted([list("abcdefg")]), ChunkingSettings(chunk_size=1, buffer_size=3))
    assert await events(stream) == [["a", "b", "c"], ["d", "e", "f"], ["g"]]


async def test_thinking_and_tool_calls_are_merged_in_order() -> None:
    from citadel_proxy.stages.chunking import merge

    merged = merge([Delta("a", "t1"), Delta("b", "t2")])
    assert merged == Delta("ab", "t1t2", None)
