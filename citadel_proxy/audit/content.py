"""What of a message's content is kept: all of it (up to a size), only its hash, or nothing."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

ContentMode = Literal["full", "hashed", "none"]


class Kept(msgspec.Struct, frozen=True, kw_only=True):
    """One piece of content as stored: the text (full mode), its digest (full and hashed), its size."""

    text: str | None = None
    sha256: str | None = None
    bytes: int = 0
    truncated: bool = False


@dataclass(frozen=True, slots=True)
class ContentPolicy:
    mode: ContentMode = "full"
    max_bytes: int = 2 * 1024 * 1024

    def keep(self, text: str) -> Kept:
        return self._keep(text.encode("utf-8", "surrogatepass"), text)

    def _keep(self, raw: bytes, text: str | None) -> Kept:
        """`keep` for text already encoded (`text`: the same text decoded, when at hand)."""
        if self.mode == "none":
            return Kept(bytes=len(raw))
        digest = hashlib.sha256(raw).hexdigest()
        if self.mode == "hashed":
            return Kept(sha256=digest, bytes=len(raw))
        if len(raw) <= self.max_bytes:
            return Kept(
                text=raw.decode("utf-8", "surrogatepass") if text is None else text,
                sha256=digest,
                bytes=len(raw),
            )
        # errors="ignore" drops a character cut in half at the limit rather than storing half of it.
        head = raw[: self.max_bytes].decode("utf-8", "ignore")
        return Kept(text=head, sha256=digest, bytes=len(raw), truncated=True)

    def document(self, value: Any) -> Any:
        """A request or response field as stored: as is (full mode, within the limit), else a summary."""
        if value is None:
            return None
        # Encoded once and never decoded whole: a large request's document would cost a copy per step.
        raw = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else msgspec.json.encode(value)
        if self.mode == "full" and len(raw) <= self.max_bytes:
            return value
        kept = self._keep(raw, value if isinstance(value, str) else None)
        summary = {"truncated": kept.text, "sha256": kept.sha256, "bytes": kept.bytes}
        return {key: item for key, item in summary.items() if item is not None}
