"""API key format, hashing and the records that describe a key (never the key itself).

A key is `cit_` followed by 32 random bytes in URL-safe base64 (256 bits of entropy). It is stored as
its SHA-256 digest only. A slow, salted password hash (bcrypt, argon2) protects *guessable* secrets;
against a uniformly random 256-bit key, brute force of even a fast hash is out of reach, and an
unsalted digest can be indexed, so a lookup costs one hash and one index probe per request instead of
a deliberately slow computation. Digests are compared with `hmac.compare_digest`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from citadel_proxy.pipeline.types import Principal

KEY_PREFIX = "cit_"
# Shown in listings so an operator can tell keys apart; 8 characters of a random body reveal 48 bits.
DISPLAY_CHARS = len(KEY_PREFIX) + 8
# Longer than any key we issue; bounds the work an attacker can make us do per request.
MAX_KEY_CHARS = 256

Scope = Literal["inference", "embeddings", "admin", "metrics"]
SCOPES: tuple[Scope, ...] = ("inference", "embeddings", "admin", "metrics")
ADMIN: Scope = "admin"
# Reads /metrics from outside monitoring.prometheus.allow (a Prometheus scraping through nginx).
METRICS: Scope = "metrics"

Sha256Hex = Annotated[str, Meta(pattern="^[0-9a-f]{64}$")]
KeyName = Annotated[str, Meta(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.@:-]+$")]
PerMinute = Annotated[int, Meta(ge=1)]


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def display_prefix(key: str) -> str:
    return key[:DISPLAY_CHARS]


def looks_like_key(key: str) -> bool:
    return key.startswith(KEY_PREFIX) and len(key) >= DISPLAY_CHARS + 8 and len(key) <= MAX_KEY_CHARS


def same_digest(a: bytes, b: bytes) -> bool:
    """Constant-time equality, so response timing says nothing about how much of a digest matched."""
    return hmac.compare_digest(a, b)


class KeyRecord(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One key as stored (keys file) or listed (database, config): its digest, never the key."""

    name: KeyName
    sha256: Sha256Hex
    scopes: list[Scope]
    prefix: str = ""
    requests_per_minute: PerMinute | None = None
    tokens_per_minute: PerMinute | None = None
    created_at: datetime | None = None
    revoked_at: datetime | None = None
    last_used: datetime | None = None
    source: Literal["config", "file", "database"] = "file"

    @property
    def digest(self) -> bytes:
        return bytes.fromhex(self.sha256)

    def principal(self) -> Principal:
        return Principal(
            name=self.name,
            scopes=frozenset(self.scopes),
            requests_per_minute=self.requests_per_minute,
            tokens_per_minute=self.tokens_per_minute,
        )
