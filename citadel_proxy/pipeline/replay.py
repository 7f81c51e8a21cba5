"""A whole completion presented as a token stream (a cached answer served to a streaming request)."""

from __future__ import annotations

import re

from citadel_proxy.pipeline.types import Completion, Delta


class CompletionStream:
    """One delta per whitespace-separated word, so chunking regroups it as it would live tokens."""

    def __init__(self, completion: Completion) -> None:
        self._completion: Completion | None = completion

    async def read(self) -> list[Delta] | None:
        completion, self._completion = self._completion, None
        if completion is None:
            return None
        deltas = [Delta(thinking=completion.thinking)] if completion.thinking else []
        deltas += [Delta(word) for word in _words(completion.content)]
        if completion.tool_calls:
            deltas.append(Delta(tool_calls=list(completion.tool_calls)))
        return deltas or None

    async def aclose(self) -> None:
        self._completion = None


# A word with the spaces before it, or the spaces that end the text.
_WORD = re.compile(r" *[^ ]+| +\Z")


def _words(text: str) -> list[str]:
    """Split keeping every character, so the words join back into exactly `text`."""
    return _WORD.findall(text)
