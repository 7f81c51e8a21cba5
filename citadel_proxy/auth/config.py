"""The `auth` section of `conf/citadel.yaml`: keys given by their SHA-256, and how long lookups are reused."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from citadel_proxy.auth.keys import KeyName, KeyRecord, PerMinute, Scope, Sha256Hex


class ConfigKey(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A key defined in the config file. Only its digest: `citadel-proxy keys hash` prints one."""

    name: KeyName
    sha256: Sha256Hex
    scopes: Annotated[list[Scope], Meta(min_length=1)]
    requests_per_minute: PerMinute | None = None
    tokens_per_minute: PerMinute | None = None

    def record(self) -> KeyRecord:
        return KeyRecord(
            name=self.name,
            sha256=self.sha256,
            scopes=list(self.scopes),
            requests_per_minute=self.requests_per_minute,
            tokens_per_minute=self.tokens_per_minute,
            source="config",
        )


class AuthConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    keys: list[ConfigKey] = msgspec.field(default_factory=list)
    # How long a worker reuses a database lookup. Revocations also reach every worker at once through
    # PostgreSQL NOTIFY; this bounds the damage if a notification is lost. 0: look up every request.
    cache_ttl_s: Annotated[float, Meta(ge=0, le=60)] = 1.0
    # Failed authentications (401) allowed per client address and window, per worker, before that address
    # gets 429 with Retry-After on every route that takes a key until its window ends. 0: no limit.
    failed_auth_limit: Annotated[int, Meta(ge=0)] = 20
    failed_auth_window_s: Annotated[float, Meta(gt=0, le=86_400)] = 60.0
    # Addresses remembered per worker; past this the oldest windows are forgotten first.
    failed_auth_max_clients: Annotated[int, Meta(ge=1)] = 10_000
    # Every worker keeps a copy of the live database keys (digests only), reloaded on every NOTIFY and
    # at least this often; while PostgreSQL is unreachable, keys are checked against that copy.
    snapshot_refresh_s: Annotated[float, Meta(gt=0, le=86400)] = 60.0
    # The longest a request waits for PostgreSQL to check a key before the copy answers instead.
    lookup_timeout_s: Annotated[float, Meta(gt=0, le=60)] = 0.5
    # A gateway started while PostgreSQL is down uses the copy saved on disk only if the database
    # confirmed it this recently: an older one could still hold keys revoked since.
    snapshot_max_age_s: Annotated[float, Meta(ge=0)] = 3600.0

    def __post_init__(self) -> None:
        names = [key.name for key in self.keys]
        if duplicate := next((n for n in names if names.count(n) > 1), None):
            raise ValueError(f"key name {duplicate!r} is used twice")
