"""The `auth` stage: who is calling, and may they use this pipeline."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from citadel_proxy.auth.guard import identify, require_key
from citadel_proxy.auth.keys import Scope
from citadel_proxy.pipeline.stage import Handler, StageSettings, StageType
from citadel_proxy.pipeline.types import Context, Principal, Reply

if TYPE_CHECKING:
    from citadel_proxy.auth.store import KeyStore
    from citadel_proxy.services import Services


class AuthSettings(StageSettings, frozen=True, kw_only=True, forbid_unknown_fields=True):
    # false: anonymous requests pass (rate_limit counts them per client IP); a key sent must still be valid.
    required: bool = True
    scope: Scope = "inference"


@dataclass(frozen=True, slots=True)
class AuthStage:
    settings: AuthSettings
    store: KeyStore

    async def admit(self, headers: Mapping[str, str]) -> Principal | None:
        """Run by the route before it reads the body: a caller without a key learns and costs nothing."""
        if self.settings.required:
            return await require_key(self.store, headers, self.settings.scope)
        # Where keys are optional, a key lacking the scope is still named, so its own limits apply.
        return await identify(self.store, headers)

    async def __call__(self, ctx: Context, call_next: Handler) -> Reply:
        if ctx.principal is None:
            ctx.principal = await self.admit(ctx.headers)
        return await call_next(ctx)


def build(settings: AuthSettings, services: Services) -> AuthStage:
    return AuthStage(settings, services.key_store)


STAGE = StageType(name="auth", settings=AuthSettings, build=build)
