"""Signed console sessions and their CSRF tokens, with stdlib hmac (no dependency).

A session cookie is `base64url(payload).base64url(hmac_sha256(secret, payload))`; the payload names the
admin key that signed in, a random session id and the expiry. The CSRF token is derived from the
session id with the same secret, so it needs no storage and dies with the session.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path

import msgspec

COOKIE = "citadel_console"
SECRET_FILE = "console-secret"
_SECRET_BYTES = 32


class Session(msgspec.Struct, frozen=True, kw_only=True):
    key_name: str
    sid: str
    expires_at: int


def load_secret(data_dir: Path) -> bytes:
    """The signing secret in `<data>/console-secret` (mode 0600), created on first use.

    Written to a private temporary file, then linked into place: workers starting together all end up
    reading the one secret that won, never a half-written file."""
    path = data_dir / SECRET_FILE
    with contextlib.suppress(FileNotFoundError):
        return _read(path)
    data_dir.mkdir(parents=True, exist_ok=True)
    temporary = data_dir / f".{SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(secrets.token_hex(_SECRET_BYTES))
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        temporary.unlink()
    return _read(path)


def _read(path: Path) -> bytes:
    text = path.read_text().strip()
    if len(text) < _SECRET_BYTES:
        raise ValueError(f"{path}: the console secret is too short; delete the file to make a new one")
    return text.encode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, purpose: bytes, data: bytes) -> bytes:
    return hmac.new(secret, purpose + b"|" + data, hashlib.sha256).digest()


def issue(secret: bytes, key_name: str, ttl_s: int, now: float | None = None) -> tuple[str, Session]:
    session = Session(
        key_name=key_name,
        sid=secrets.token_hex(16),
        expires_at=int((time.time() if now is None else now) + ttl_s),
    )
    payload = msgspec.json.encode(session)
    return f"{_b64(payload)}.{_b64(_mac(secret, b'session', payload))}", session


def verify(secret: bytes, cookie: str | None, now: float | None = None) -> Session | None:
    """The session a cookie carries, or None when it is absent, forged, malformed or expired."""
    if not cookie or cookie.count(".") != 1:
        return None
    encoded, signature = cookie.split(".")
    try:
        payload = _unb64(encoded)
        valid = hmac.compare_digest(_unb64(signature), _mac(secret, b"session", payload))
        session = msgspec.json.decode(payload, type=Session) if valid else None
    except (ValueError, msgspec.DecodeError):
        return None
    if session is None or session.expires_at <= (time.time() if now is None else now):
        return None
    return session


def csrf_token(secret: bytes, session: Session) -> str:
    return _b64(_mac(secret, b"csrf", session.sid.encode()))


def csrf_valid(secret: bytes, session: Session, presented: str | None) -> bool:
    return bool(presented) and hmac.compare_digest(str(presented), csrf_token(secret, session))
