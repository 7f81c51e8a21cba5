"""The console's security frame over plain HTTP: sessions, CSRF, cookie flags and headers."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import aiohttp

from citadel_proxy.console import session as sessions
from citadel_proxy.console.headers import CONTENT_SECURITY_POLICY
from tests.console.conftest import browser, csrf_of, sign_in
from tests.core.conftest import AUTH, TEST_KEY, Gateway
from tests.management.conftest import INFERENCE_KEY

PAGES = ["/console/", "/console/overview", "/console/models", "/console/keys", "/console/audit"]


async def test_nothing_of_the_console_without_a_session(gateway: Gateway) -> None:
    async with browser(gateway) as session:
        for path in PAGES:
            async with session.get(path, allow_redirects=False) as response:
                assert response.status == 303, path
                assert response.headers["Location"] == "/console/login"
        for path in ["/console/api/keys", "/console/api/models", "/console/api/overview",
                     "/console/api/audit/conversations", "/console/static/keys.js"]:  # fmt: skip
            async with session.get(path) as response:
                assert response.status == 401, path
        async with session.post("/console/api/keys/create", json={"name": "x", "scopes": []}) as response:
            assert response.status == 401
        # The sign-in page's stylesheet is the one file served to anyone.
        async with session.get("/console/static/console.css") as response:
            assert response.status == 200


async def test_security_headers_and_no_inline_script(gateway: Gateway) -> None:
    async with browser(gateway) as session:
        async with session.get("/console/login") as response:
            assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
            assert response.headers["X-Frame-Options"] == "DENY"
            assert "no-store" in response.headers["Cache-Control"]
        assert "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY
        assert "'unsafe-inline'" not in CONTENT_SECURITY_POLICY
        assert (await sign_in(session)).status == 303
        for path in PAGES:
            async with session.get(path) as response:
                html = await response.text()
                assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
            # Every <script> loads a file: the CSP would block an inline one anyway.
            for tag in re.findall(r"<script[^>]*>", html):
                assert 'src="/console/static/' in tag, (path, tag)
            assert " on" not in "".join(re.findall(r"<[^>]+ on[a-z]+=", html)), path


async def test_sign_in_sets_a_strict_http_only_expiring_cookie(gateway: Gateway) -> None:
    async with browser(gateway) as session:
        response = await sign_in(session)
    assert response.status == 303
    assert response.headers["Location"] == "/console/"
    cookie = next(v for v in response.headers.getall("Set-Cookie") if v.startswith(sessions.COOKIE + "="))
    flags = [part.strip().lower() for part in cookie.split(";")]
    assert "httponly" in flags
    assert "samesite=strict" in flags
    assert "path=/console" in flags
    assert "max-age=28800" in flags
    # Plain HTTP here: a Secure cookie would never come back.
    assert "secure" not in flags


async def test_wrong_or_non_admin_key_is_refused(gateway: Gateway) -> None:
    async with browser(gateway) as session:
        for key in ["sk-not-a-real-key", INFERENCE_KEY]:
            response = await sign_in(session, key)
            assert response.status == 401
            assert sessions.COOKIE not in {c.key for c in session.cookie_jar}
        async with session.get("/console/", allow_redirects=False) as page:
            assert page.status == 303


async def test_sign_in_needs_the_forms_token(gateway: Gateway) -> None:
    """A page on another site cannot post a key of its choosing (login CSRF)."""
    async with (
        browser(gateway) as session,
        session.post("/console/login", data={"csrf": "guess", "key": "x"}) as response,
    ):
        assert response.status == 403


async def test_every_change_needs_the_csrf_token(gateway: Gateway) -> None:
    async with browser(gateway) as session:
        await sign_in(session)
        token = await csrf_of(session)
        body = {"name": "from-console", "scopes": ["inference"]}
        for headers in [{}, {"X-CSRF-Token": "wrong"}]:
            async with session.post("/console/api/keys/create", json=body, headers=headers) as response:
                assert response.status == 403
                assert (await response.json())["error"]["code"] == "csrf"
        async with session.post("/console/logout", allow_redirects=False) as response:
            assert response.status == 403
        async with session.post(
            "/console/api/keys/create", json=body, headers={"X-CSRF-Token": token}
        ) as response:
            assert response.status == 201
            made = await response.json()
    # The key works, shown once to the operator.
    async with aiohttp.ClientSession(gateway.url) as client:
        headers = {"Authorization": f"Bearer {made['key']}"}
        async with client.get("/v1/models", headers=headers) as response:
            assert response.status == 200


async def test_sign_out_ends_the_session(gateway: Gateway) -> None:
    async with browser(gateway) as session:
        await sign_in(session)
        token = await csrf_of(session)
        async with session.post("/console/logout", data={"csrf": token}, allow_redirects=False) as response:
            assert response.status == 303
        async with session.get("/console/", allow_redirects=False) as response:
            assert response.status == 303


async def test_a_forged_cookie_is_no_session(gateway: Gateway) -> None:
    forged, _ = sessions.issue(b"x" * 64, "tester", 3600)
    async with browser(gateway) as session:
        session.cookie_jar.update_cookies({sessions.COOKIE: forged})
        async with session.get("/console/api/keys") as response:
            assert response.status == 401


async def test_the_management_api_still_takes_keys_not_sessions(gateway: Gateway) -> None:
    async with browser(gateway) as session:
        await sign_in(session)
        async with session.get("/management/models/list") as response:
            assert response.status == 401
    async with (
        aiohttp.ClientSession(gateway.url, headers=AUTH) as client,
        client.get("/management/models/list") as response,
    ):
        assert response.status == 200


async def test_the_secret_is_private_to_the_gateway(gateway: Gateway) -> None:
    async with browser(gateway) as session:
        await sign_in(session)
    secret = gateway.config_path.parent / "data" / sessions.SECRET_FILE
    assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600


def test_sessions_expire_and_resist_tampering(tmp_path: Path) -> None:
    secret = sessions.load_secret(tmp_path)
    assert sessions.load_secret(tmp_path) == secret
    cookie, session = sessions.issue(secret, "tester", 60, now=1000.0)
    assert sessions.verify(secret, cookie, now=1059.0) == session
    assert sessions.verify(secret, cookie, now=1060.0) is None
    payload, signature = cookie.split(".")
    assert sessions.verify(secret, f"{payload}x.{signature}", now=1000.0) is None
    assert sessions.verify(b"another" * 8, cookie, now=1000.0) is None
    assert sessions.csrf_valid(secret, session, sessions.csrf_token(secret, session))
    assert not sessions.csrf_valid(secret, session, None)


async def test_behind_tls_the_cookies_are_secure(gateway: Gateway) -> None:
    """nginx in front (a trusted proxy, loopback here) says the browser came over HTTPS."""
    https = {"X-Forwarded-Proto": "https"}
    # No cookie jar: it would (rightly) keep a Secure cookie from a plain-HTTP request to itself.
    async with aiohttp.ClientSession(gateway.url, cookie_jar=aiohttp.DummyCookieJar()) as session:
        async with session.get("/console/login", headers=https) as form:
            token = re.search(r'name="csrf" value="([^"]+)"', await form.text())
            login_cookie = form.headers["Set-Cookie"]
        assert token is not None and "; secure" in login_cookie.lower()
        async with session.post(
            "/console/login",
            data={"csrf": token.group(1), "key": TEST_KEY},
            headers=https | {"Cookie": login_cookie.split(";")[0]},
            allow_redirects=False,
        ) as response:
            assert response.status == 303
            cookies = response.headers.getall("Set-Cookie")
    [issued] = [c for c in cookies if c.startswith(sessions.COOKIE + "=")]
    assert "secure" in [part.strip().lower() for part in issued.split(";")]


def test_a_disabled_console_has_no_routes() -> None:
    from citadel_proxy.config.schema import Config, ConsoleOptions
    from citadel_proxy.console.app import console_routes

    assert console_routes(Config(console=ConsoleOptions(enabled=False))) == []
    assert console_routes(Config()) != []
