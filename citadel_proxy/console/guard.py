"""Who may see the console: a valid session cookie for pages and data, plus a CSRF token for changes.

Pages without a session redirect to the sign-in form; data routes answer 401. Every method other than
GET/HEAD needs the session's CSRF token, in the `X-CSRF-Token` header (scripts) or the `csrf` form
field (forms); SameSite=Strict on the cookie is a second line, not the only one.
"""

from __future__ import annotations

import asyncio
import functools
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp

from citadel_proxy.auth.keys import ADMIN
from citadel_proxy.config.schema import Config
from citadel_proxy.console import session as sessions
from citadel_proxy.console.session import Session
from citadel_proxy.http.body import read_body
from citadel_proxy.pipeline.types import Principal
from citadel_proxy.services import Services

LOGIN_PATH = "/console/login"
CSRF_HEADER = "x-csrf-token"
MAX_FORM_BYTES = 4096
_SAFE = frozenset({"GET", "HEAD"})

# A pipeline's stream is answered by an ASGI app of its own (http/stream_response.py), not a Response.
Endpoint = Callable[[Request], Awaitable[Response | ASGIApp]]


class ConsoleKeys:
    """The signing secret, read (or created) on the first console request rather than at start, so a
    gateway whose console nobody opens never writes it; and the names of the static files served."""

    def __init__(self, config: Config, static_files: frozenset[str] = frozenset()) -> None:
        self.config = config
        self.static_files = static_files
        self._secret: bytes | None = None
        self._lock = asyncio.Lock()

    async def secret(self) -> bytes:
        if self._secret is None:
            async with self._lock:
                if self._secret is None:
                    data = Path(self.config.paths.data)
                    self._secret = await asyncio.to_thread(sessions.load_secret, data)
        return self._secret


SCOPE_KEY = "citadel.console_keys"


def keys(request: Request) -> ConsoleKeys:
    """Put in the scope by the console's own app (console/app.py), not in the app-wide state."""
    found: ConsoleKeys = request.scope[SCOPE_KEY]
    return found


async def current_session(request: Request) -> Session | None:
    return sessions.verify(await keys(request).secret(), request.cookies.get(sessions.COOKIE))


async def form_fields(request: Request) -> dict[str, str]:
    """A small urlencoded form (sign-in, sign-out), without python-multipart: the first value of each."""
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return {}
    raw = (await read_body(request, MAX_FORM_BYTES)).decode("utf-8", "replace")
    return {name: values[0] for name, values in urllib.parse.parse_qs(raw, max_num_fields=8).items()}


async def csrf_ok(request: Request, session: Session) -> bool:
    presented = request.headers.get(CSRF_HEADER)
    if presented is None:
        presented = (await form_fields(request)).get("csrf")
    return sessions.csrf_valid(await keys(request).secret(), session, presented)


def _forbidden() -> Response:
    return JSONResponse(
        {"error": {"message": "missing or wrong CSRF token", "type": "permission_error", "code": "csrf"}},
        status_code=403,
    )


def _signed_out(page: bool) -> Response:
    if page:
        return RedirectResponse(LOGIN_PATH, status_code=303)
    return JSONResponse(
        {"error": {"message": "sign in to the console", "type": "auth_error", "code": "no_session"}},
        status_code=401,
    )


async def live_principal(services: Services, session: Session) -> Principal | None:
    """The key that signed in, if it is still live and still admin: revoking it (or taking its admin
    scope away) ends its console sessions at their next request, not at their expiry."""
    for record in await services.key_store.list():
        if record.name == session.key_name and record.revoked_at is None and ADMIN in record.scopes:
            return record.principal()
    return None


def _guarded(endpoint: Endpoint, *, page: bool) -> Endpoint:
    @functools.wraps(endpoint)
    async def guarded(request: Request) -> Response | ASGIApp:
        session = await current_session(request)
        if session is None:
            return _signed_out(page)
        if request.method not in _SAFE and not await csrf_ok(request, session):
            return _forbidden()
        principal = await live_principal(request.state.services, session)
        if principal is None:
            return _signed_out(page)
        request.state.console_session = session
        request.state.console_principal = principal
        # What logs and audit records name as the caller, as the admin key would be named.
        request.state.key_name = session.key_name
        return await endpoint(request)

    return guarded


def page(endpoint: Endpoint) -> Endpoint:
    return _guarded(endpoint, page=True)


def data(endpoint: Endpoint) -> Endpoint:
    return _guarded(endpoint, page=False)
