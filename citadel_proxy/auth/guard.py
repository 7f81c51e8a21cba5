"""Finding the key in a request and deciding 401 or 403; shared by the auth stage and management routes."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from citadel_proxy.auth.keys import ADMIN
from citadel_proxy.errors import AuthenticationFailed, PermissionDenied
from citadel_proxy.pipeline.types import Principal

if TYPE_CHECKING:
    from citadel_proxy.auth.store import KeyStore


def presented_key(headers: Mapping[str, str]) -> str | None:
    """`Authorization: Bearer KEY`, else `X-API-Key: KEY`."""
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            return credentials.strip()
    key = headers.get("x-api-key", "").strip()
    return key or None


async def identify(store: KeyStore, headers: Mapping[str, str]) -> Principal | None:
    """The caller's principal, or None when the request carries no key.

    A key that is presented but unknown is refused even where keys are optional: a client that
    believes it is authenticated should learn that it is not.
    """
    key = presented_key(headers)
    if key is None:
        return None
    principal = await store.authenticate(key)
    if principal is None:
        raise AuthenticationFailed("Incorrect API key provided, or the key was revoked.")
    return principal


def missing_key() -> AuthenticationFailed:
    return AuthenticationFailed(
        "No API key provided. Send it as 'Authorization: Bearer KEY' or 'X-API-Key: KEY'."
    )


def require_scope(principal: Principal, scope: str) -> None:
    if scope not in principal.scopes:
        error = PermissionDenied(f"The API key {principal.name!r} does not have the {scope!r} scope.")
        error.key_name = principal.name
        raise error


def refuse_locked_out(request: Request) -> None:
    """429 for a client address over its failed-authentication limit, before any key is looked up."""
    # From the scope itself: request.client builds an Address on each access, and request.state's
    # attributes are a Python method's lookups.
    scope = request.scope
    client = scope.get("client")
    scope["state"]["services"].failed_auth.check(client[0] if client else "")


async def require_key(store: KeyStore, headers: Mapping[str, str], scope: str | None = None) -> Principal:
    """The caller's principal (with `scope`, when one is named); a request without a key is refused."""
    principal = await identify(store, headers)
    if principal is None:
        raise missing_key()
    if scope is not None:
        require_scope(principal, scope)
    return principal


async def require_admin(request: Request, services: Any) -> Principal:
    """For every /management/* route, whatever the pipelines say: a valid key with the `admin` scope."""
    return await require_key(services.key_store, request.headers, ADMIN)


Endpoint = Callable[[Request], Awaitable[Response]]


def _guarded(endpoint: Endpoint, scope: str | None) -> Endpoint:
    @functools.wraps(endpoint)
    async def guarded(request: Request) -> Response:
        refuse_locked_out(request)
        principal = await require_key(request.state.services.key_store, request.headers, scope)
        request.state.key_name = principal.name
        return await endpoint(request)

    return guarded


def admin_only(endpoint: Endpoint) -> Endpoint:
    """A management endpoint: the `admin` scope is required whatever the pipelines say."""
    return _guarded(endpoint, ADMIN)


def any_key(endpoint: Endpoint) -> Endpoint:
    """A public endpoint that still wants a valid key (any scope), as OpenAI's /v1/models does."""
    return _guarded(endpoint, None)
