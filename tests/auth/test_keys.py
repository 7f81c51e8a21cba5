"""Key format, digests and the config and file key sources (no database)."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import stat
from pathlib import Path

import msgspec
import pytest

from citadel_proxy.auth import filekeys
from citadel_proxy.auth.config import AuthConfig, ConfigKey
from citadel_proxy.auth.filekeys import KEYS_FILE
from citadel_proxy.auth.keys import KEY_PREFIX, KeyRecord, generate_key, hash_key, looks_like_key
from citadel_proxy.auth.store import open_key_store
from tests.auth.conftest import MakeConfig


def config_key(name: str, key: str, scopes: list[str], **limits: int) -> ConfigKey:
    return ConfigKey(name=name, sha256=hashlib.sha256(key.encode()).hexdigest(), scopes=scopes, **limits)  # type: ignore[arg-type]


def read_text(path: str) -> str:
    return Path(path).read_text()


def test_generated_keys_are_prefixed_random_and_long() -> None:
    keys = {generate_key() for _ in range(100)}
    assert len(keys) == 100
    for key in keys:
        assert key.startswith(KEY_PREFIX)
        assert len(key) >= len(KEY_PREFIX) + 43  # 32 bytes in URL-safe base64
        assert looks_like_key(key)
    assert hash_key("cit_x") == hashlib.sha256(b"cit_x").digest()


def test_config_section_takes_digests_only() -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"keys": [{"name": "a", "key": "cit_plain", "scopes": ["inference"]}]}, AuthConfig)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"keys": [{"name": "a", "sha256": "nothex", "scopes": ["inference"]}]}, AuthConfig)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"keys": [{"name": "a", "sha256": "0" * 64, "scopes": ["root"]}]}, AuthConfig)
    dup = {"name": "a", "sha256": "0" * 64, "scopes": ["admin"]}
    with pytest.raises(msgspec.ValidationError, match="used twice"):
        msgspec.convert({"keys": [dup, dup]}, AuthConfig)


async def test_config_keys_authenticate_with_their_scopes_and_limits(
    make_config: MakeConfig, stack: contextlib.AsyncExitStack
) -> None:
    chat, embed = generate_key(), generate_key()
    auth = AuthConfig(
        keys=[
            config_key("chat", chat, ["inference"], requests_per_minute=5, tokens_per_minute=100),
            config_key("embed", embed, ["embeddings"]),
        ]
    )
    store = await open_key_store(make_config(auth=auth), stack)
    principal = await store.authenticate(chat)
    assert principal is not None
    assert (principal.name, principal.scopes) == ("chat", frozenset({"inference"}))
    assert (principal.requests_per_minute, principal.tokens_per_minute) == (5, 100)
    assert (await store.authenticate(embed)).name == "embed"  # type: ignore[union-attr]
    assert await store.authenticate(generate_key()) is None
    assert await store.authenticate(chat + "x") is None
    assert await store.authenticate("not-a-key") is None
    assert await store.authenticate("cit_" + "a" * 10_000) is None


async def test_every_config_digest_is_compared_in_constant_time(
    make_config: MakeConfig, stack: contextlib.AsyncExitStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = [generate_key() for _ in range(3)]
    auth = AuthConfig(keys=[config_key(f"k{i}", k, ["inference"]) for i, k in enumerate(keys)])
    store = await open_key_store(make_config(auth=auth), stack)
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert (await store.authenticate(keys[0])).name == "k0"  # type: ignore[union-attr]
    # The first entry matched, and the others were still compared: no early exit.
    assert len(calls) == 3
    assert all(b == hash_key(keys[0]) for _, b in calls)


async def test_file_keys_without_database(make_config: MakeConfig, stack: contextlib.AsyncExitStack) -> None:
    config = make_config()
    store = await open_key_store(config, stack)
    new = await store.create("ops", ["inference", "embeddings"], requests_per_minute=7)
    path = os.path.join(config.paths.data, KEYS_FILE)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    text = read_text(path)
    assert new.key not in text and hash_key(new.key).hex() in text
    assert (await store.authenticate(new.key)).requests_per_minute == 7  # type: ignore[union-attr]

    # Another worker's store sees the revocation on its next lookup.
    other = await open_key_store(config, stack)
    assert await other.authenticate(new.key) is not None
    assert await store.revoke("ops")
    assert await other.authenticate(new.key) is None
    assert not await store.revoke("ops")
    listed = await store.list()
    assert [(r.name, r.revoked_at is not None) for r in listed] == [("ops", True)]


def test_an_absent_keys_file_is_looked_for_again_once_a_second_or_when_written_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = generate_key()
    record = KeyRecord(name="late", sha256=hash_key(key).hex(), scopes=["inference"])
    static = filekeys.StaticKeys(config_keys=(), path=tmp_path / KEYS_FILE)
    now = [100.0]
    monkeypatch.setattr(filekeys.time, "monotonic", lambda: now[0])
    assert static.lookup(hash_key(key)) is None
    filekeys.write_keys_file(static.path, [record])  # another process (the CLI) wrote it
    assert static.lookup(hash_key(key)) is None  # still trusted absent
    now[0] += filekeys.ABSENT_RECHECK_S
    assert static.lookup(hash_key(key)) is not None
    # Once it exists, every lookup checks it: a revocation is seen at once.
    filekeys.write_keys_file(static.path, [])
    assert static.lookup(hash_key(key)) is None
    static.path.unlink()
    assert static.lookup(hash_key(key)) is None
    filekeys.write_keys_file(static.path, [record])
    static.written()  # written by this process: read on the next lookup
    assert static.lookup(hash_key(key)) is not None
