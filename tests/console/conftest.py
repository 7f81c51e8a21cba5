"""A gateway in front of a fake Ollama, and a way to sign in to its console as a browser would."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.core.conftest import TEST_KEY, Gateway
from tests.management.conftest import fake, gateway  # noqa: F401

_CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)">')
_LOGIN_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def browser(gateway: Gateway) -> aiohttp.ClientSession:  # noqa: F811
    # unsafe=True: the gateway is on 127.0.0.1, and aiohttp keeps no cookies for IP hosts otherwise.
    return aiohttp.ClientSession(gateway.url, cookie_jar=aiohttp.CookieJar(unsafe=True))


async def sign_in(session: aiohttp.ClientSession, key: str = TEST_KEY) -> aiohttp.ClientResponse:
    """GET the form (its one-off token and cookie), then POST the key; the redirect is not followed."""
    async with session.get("/console/login") as form:
        token = _LOGIN_CSRF.search(await form.text())
    assert token is not None
    async with session.post(
        "/console/login", data={"csrf": token.group(1), "key": key}, allow_redirects=False
    ) as response:
        await response.read()
        return response


async def csrf_of(session: aiohttp.ClientSession) -> str:
    async with session.get("/console/") as page:
        assert page.status == 200
        found = _CSRF_META.search(await page.text())
    assert found is not None
    return found.group(1)


@contextlib.asynccontextmanager
async def signed_in(gateway: Gateway) -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:  # noqa: F811
    """A browser signed in with the test key, and its CSRF token."""
    async with browser(gateway) as session:
        await sign_in(session)
        yield session, await csrf_of(session)


@pytest.fixture
async def console(gateway: Gateway) -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:  # noqa: F811
    """A signed-in session and its CSRF token."""
    async with browser(gateway) as session:
        assert (await sign_in(session)).status == 303
        yield session, await csrf_of(session)
