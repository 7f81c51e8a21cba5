"""The console's sign-in, sign-out and server-rendered pages (templates/); their data comes from api.py."""

from __future__ import annotations

import hmac
import secrets
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from citadel_proxy import errors
from citadel_proxy.auth.guard import refuse_locked_out
from citadel_proxy.auth.keys import ADMIN
from citadel_proxy.console import guard
from citadel_proxy.console import session as sessions
from citadel_proxy.services import Services

LOGIN_COOKIE = "citadel_console_login"
_LOGIN_COOKIE_S = 600
TEMPLATES = Jinja2Templates(directory=Path(__file__).with_name("templates"))
PAGES = ("overview", "models", "keys", "audit", "pipelines", "playground")


def _services(request: Request) -> Services:
    services: Services = request.state.services
    return services


def _secure(request: Request) -> bool:
    """Secure cookies when the browser came over HTTPS (http.front honours trusted proxies' headers)."""
    return request.url.scheme == "https"


def _login_page(request: Request, message: str | None = None, status: int = 200) -> Response:
    """The form carries a one-off token also set as a cookie (double submit): a page on another site
    cannot sign a browser in with the attacker's key."""
    token = secrets.token_urlsafe(24)
    response = TEMPLATES.TemplateResponse(
        request, "login.html", {"login_csrf": token, "message": message}, status_code=status
    )
    response.set_cookie(
        LOGIN_COOKIE,
        token,
        max_age=_LOGIN_COOKIE_S,
        path=guard.LOGIN_PATH,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )
    return response


async def login_form(request: Request) -> Response:
    if await guard.current_session(request) is not None:
        return RedirectResponse("/console/", status_code=303)
    return _login_page(request)


async def login(request: Request) -> Response:
    try:
        refuse_locked_out(request)
    except errors.GatewayError as exc:
        return _login_page(request, exc.message, exc.status)
    form = await guard.form_fields(request)
    expected = request.cookies.get(LOGIN_COOKIE, "")
    if not expected or not hmac.compare_digest(str(form.get("csrf", "")), expected):
        return _login_page(request, "The sign-in form expired; try again.", 403)
    services = _services(request)
    principal = await services.key_store.authenticate(str(form.get("key", "")).strip())
    if principal is None or ADMIN not in principal.scopes:
        services.failed_auth.failed(request.client.host if request.client else "")
        return _login_page(request, "Wrong key, revoked key, or a key without the admin scope.", 401)
    ttl_s = services.config.console.session_ttl_s
    cookie, _session = sessions.issue(await guard.keys(request).secret(), principal.name, ttl_s)
    response = RedirectResponse("/console/", status_code=303)
    response.delete_cookie(LOGIN_COOKIE, path=guard.LOGIN_PATH)
    response.set_cookie(
        sessions.COOKIE,
        cookie,
        max_age=ttl_s,
        path="/console",
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )
    return response


async def logout(request: Request) -> Response:
    response = RedirectResponse(guard.LOGIN_PATH, status_code=303)
    response.delete_cookie(sessions.COOKIE, path="/console", httponly=True, samesite="strict")
    return response


async def render(request: Request, name: str, **context: Any) -> Response:
    session: sessions.Session = request.state.console_session
    token = sessions.csrf_token(await guard.keys(request).secret(), session)
    return TEMPLATES.TemplateResponse(
        request,
        f"{name}.html",
        {"page": name, "pages": PAGES, "csrf": token, "who": session.key_name, **context},
    )


async def overview(request: Request) -> Response:
    return await render(request, "overview")


async def models(request: Request) -> Response:
    return await render(request, "models")


async def keys(request: Request) -> Response:
    return await render(request, "keys")


async def audit(request: Request) -> Response:
    return await render(request, "audit")


async def pipelines(request: Request) -> Response:
    return await render(request, "pipelines")


async def playground(request: Request) -> Response:
    built = _services(request).pipelines.current.by_route
    routes = sorted(route for route, p in built.items() if p.spec.format != "embeddings")
    return await render(request, "playground", routes=routes)
