"""The auth stage and `require_admin`: both header forms, 401 and 403 at each scope boundary."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from citadel_proxy.auth.config import AuthConfig
from citadel_proxy.auth.guard import require_admin
from citadel_proxy.auth.keys import SCOPES, generate_key
from citadel_proxy.auth.store import KeyStore, open_key_store
from citadel_proxy.errors import AuthenticationFailed, GatewayError, PermissionDenied
from citadel_proxy.http.responses import on_gateway_error
from citadel_proxy.pipeline.types import Completion, Context, Reply
from citadel_proxy.stages.auth import STAGE, AuthSettings
from tests.auth.conftest import MakeConfig, make_ctx
from tests.auth.test_keys import config_key

KEYS = {scope: generate_key() for scope in SCOPES}


@pytest.fixture
async def store(make_config: MakeConfig, stack: contextlib.AsyncExitStack) -> KeyStore:
    keys = [config_key(f"{scope}-key", key, [scope]) for scope, key in KEYS.items()]
    return await open_key_store(make_config(auth=AuthConfig(keys=keys)), stack)


async def terminal(ctx: Context) -> Reply:
    return Reply(completion=Completion(content=ctx.principal.name if ctx.principal else "anonymous"))


async def run(store: KeyStore, headers: dict[str, str], **settings: object) -> str:
    stage = STAGE.build(AuthSettings(**settings), SimpleNamespace(key_store=store))  # type: ignore[arg-type]
    reply = await stage(make_ctx(headers), terminal)
    assert reply.completion is not None
    return reply.completion.content


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": f"Bearer {KEYS['inference']}"},
        {"authorization": f"bearer  {KEYS['inference']} "},
        {"X-API-Key": KEYS["inference"]},
    ],
)
async def test_both_header_forms(store: KeyStore, headers: dict[str, str]) -> None:
    assert await run(store, headers) == "inference-key"


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer "}, {"X-API-Key": ""}],
)
async def test_missing_key_is_401_with_www_authenticate(store: KeyStore, headers: dict[str, str]) -> None:
    with pytest.raises(AuthenticationFailed) as caught:
        await run(store, headers)
    assert caught.value.status == 401
    assert caught.value.headers["WWW-Authenticate"] == "Bearer"


async def test_unknown_key_is_401_even_where_keys_are_optional(store: KeyStore) -> None:
    for required in (True, False):
        with pytest.raises(AuthenticationFailed):
            await run(store, {"X-API-Key": generate_key()}, required=required)


@pytest.mark.parametrize("pipeline_scope", SCOPES)
@pytest.mark.parametrize("key_scope", SCOPES)
async def test_each_scope_boundary(store: KeyStore, pipeline_scope: str, key_scope: str) -> None:
    headers = {"Authorization": f"Bearer {KEYS[key_scope]}"}
    if key_scope == pipeline_scope:
        assert await run(store, headers, scope=pipeline_scope) == f"{key_scope}-key"
    else:
        with pytest.raises(PermissionDenied) as caught:
            await run(store, headers, scope=pipeline_scope)
        assert caught.value.status == 403 and pipeline_scope in caught.value.message


async def test_optional_auth_lets_anonymous_through_and_still_names_keys(store: KeyStore) -> None:
    assert await run(store, {}, required=False) == "anonymous"
    assert await run(store, {"X-API-Key": KEYS["embeddings"]}, required=False) == "embeddings-key"


def management_app(store: KeyStore) -> Starlette:
    services = SimpleNamespace(key_store=store)

    async def models(request: Request) -> PlainTextResponse:
        principal = await require_admin(request, services)
        return PlainTextResponse(principal.name)

    return Starlette(
        routes=[Route("/management/models/list", models)],
        exception_handlers={GatewayError: on_gateway_error},
    )


async def test_management_routes_require_admin(store: KeyStore) -> None:
    transport = httpx.ASGITransport(app=management_app(store))
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        url = "/management/models/list"
        missing = await client.get(url)
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == "Bearer"
        assert missing.json()["error"]["type"] == "authentication_error"

        for scope in ("inference", "embeddings"):
            refused = await client.get(url, headers={"Authorization": f"Bearer {KEYS[scope]}"})
            assert refused.status_code == 403
            assert refused.json()["error"]["code"] == "insufficient_scope"

        allowed = await client.get(url, headers={"X-API-Key": KEYS["admin"]})
        assert (allowed.status_code, allowed.text) == (200, "admin-key")
