"""The console mounted at /console: its routes, its signing keys in the scope, its security headers."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route, Router
from starlette.types import Receive, Scope, Send

from citadel_proxy.config.schema import Config
from citadel_proxy.console import api, guard, pages
from citadel_proxy.console.headers import SecurityHeaders

STATIC = Path(__file__).with_name("static")
# The sign-in page's stylesheet; every other file waits for a session, as the pages do.
PUBLIC_STATIC = frozenset({"console.css"})


async def static_file(request: Request) -> Response:
    name = request.path_params["name"]
    files = guard.keys(request).static_files
    if name not in files:
        return JSONResponse({"error": {"message": "not found", "code": "not_found"}}, status_code=404)
    if name not in PUBLIC_STATIC and await guard.current_session(request) is None:
        return JSONResponse({"error": {"message": "sign in to the console", "code": "no_session"}}, 401)
    return FileResponse(STATIC / name, headers={"Cache-Control": "no-cache"})


class ConsoleApp:
    def __init__(self, config: Config) -> None:
        served = frozenset(p.name for p in STATIC.iterdir() if p.is_file())
        self.keys = guard.ConsoleKeys(config, served)
        routes: list[BaseRoute] = [
            Route("/", guard.page(pages.overview), methods=["GET"]),
            Route("/login", pages.login_form, methods=["GET"]),
            Route("/login", pages.login, methods=["POST"]),
            Route("/logout", guard.page(pages.logout), methods=["POST"]),
            *(Route(f"/{name}", guard.page(getattr(pages, name)), methods=["GET"]) for name in pages.PAGES),
            *api.routes(),
            Route("/static/{name}", static_file, methods=["GET"]),
        ]
        self.app = SecurityHeaders(Router(routes))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[guard.SCOPE_KEY] = self.keys
        await self.app(scope, receive, send)


async def _to_console(_request: object) -> Response:
    return RedirectResponse("/console/", status_code=308)


def console_routes(config: Config) -> list[BaseRoute]:
    if not config.console.enabled:
        return []
    return [Route("/console", _to_console, methods=["GET"]), Mount("/console", app=ConsoleApp(config))]
