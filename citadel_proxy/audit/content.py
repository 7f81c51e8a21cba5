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
        raw = text.encode("utf-8", "surrogatepass")
        if self.mode == "none":
            return Kept(bytes=len(raw))
        digest = hashlib.sha256(raw).hexdigest()
        if self.mode == "hashed":
            return Kept(sha256=digest, bytes=len(raw))
        if len(raw) <= self.max_bytes:
            return Kept(text=text, sha256=digest, bytes=len(raw))
        # errors="ignore" drops a character cut in half at the limit rather than storing half of it.
        head = raw[: self.max_bytes].decode("utf-8", "ignore")
        return Kept(text=head, sha256=digest, bytes=len(raw), truncated=True)

    def document(self, value: Any) -> Any:
        """A request or response field as stored: as is (full mode, within the limit), else a summary."""
        if value is None:
            return None
        text = value if isinstance(value, str) else msgspec.json.encode(value).decode()
        if self.mode == "full" and len(text.encode("utf-8", "surrogatepass")) <= self.max_bytes:
            return value
        kept = self.keep(text)
        summary = {"truncated": kept.text, "sha256": kept.sha256, "bytes": kept.bytes}
        return {key: item for key, item in summary.items() if item is not None}
