"""A real browser on another origin streams a chat answer with fetch() and reads the gateway's headers.

This is what the README tells browser clients to do: CORS must let the page in, the stream must arrive
through a ReadableStream, and X-Conversation-ID, X-Request-ID and the rate-limit headers must be
readable by the page's JavaScript (`gateway.cors.expose_headers`).

The page's screenshot after the stream is kept at var/test-artifacts/browser-stream.png (ignored by
git); its path is written at the end of pytest's output, whatever the capture mode, so CI logs name it.
"""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from tests.browser.chromium import headless_page
from tests.core.conftest import REPO, TEST_KEY, free_port, running_gateway, write_config
from tests.deploy.harness import require_tool
from tests.fakes.ollama import Behavior, FakeOllama

PAGE = Path(__file__).with_name("page.html")
SCREENSHOT = REPO / "var" / "test-artifacts" / "browser-stream.png"
ANSWER = ["Streamed", " into", " a", " browser", " tab", ",", " token", " by", " token", "."] * 3


@pytest.fixture
async def page_origin(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, list[str]]]:
    """An origin of its own serving the page; the test fills `html` before the browser asks for it."""
    html: list[str] = []

    async def serve_page(_request: web.Request) -> web.Response:
        return web.Response(text=html[0], content_type="text/html")

    app = web.Application()
    app.router.add_get("/", serve_page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}", html
    finally:
        await runner.cleanup()


def report_screenshot(config: pytest.Config, path: Path) -> None:
    """Written at the session's end by the terminal reporter: seen with and without -s, pass or fail."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        config.add_cleanup(functools.partial(reporter.write_line, f"browser test screenshot: {path}"))


async def test_a_page_on_another_origin_streams_and_reads_the_headers(
    page_origin: tuple[str, list[str]], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    chromium = require_tool("chromium", "chromium")
    origin, html = page_origin
    async with FakeOllama() as fake:
        fake.set_behavior("phi3:latest", Behavior(tokens=ANSWER, token_delay_s=0.01))
        config = write_config(
            tmp_path,
            fake.port,
            REPO / "pipelines",
            extra_gateway=f"  cors: {{enabled: true, origins: ['{origin}']}}",
        )
        async with running_gateway(config, fake, server="uvicorn") as gw:
            settings = {"gateway": gw.url, "key": TEST_KEY, "model": "phi3"}
            html.append(PAGE.read_text().replace("/*SETTINGS*/null", json.dumps(settings)))
            async with headless_page(chromium, tmp_path / "chromium-profile") as page:
                await page.open(origin + "/")
                outcome = await page.evaluate("window.finished")
                shown = await page.evaluate(
                    "Object.fromEntries([...document.querySelectorAll('[data-field]')]"
                    ".map((e) => [e.dataset.field, e.textContent]))"
                )
                shot = await page.screenshot(SCREENSHOT)
    report_screenshot(request.config, shot)
    assert outcome == "done", f"{outcome}; the page showed {shown}; screenshot {shot}"
    assert shown["status"] == "200", shown
    assert shown["text"] == "".join(ANSWER), f"{shown}; screenshot {shot}"
    assert int(shown["events"]) > 1, "the answer came in several events, read as they arrived"
    hidden = [name for name, value in shown.items() if value in ("", "(hidden)")]
    assert not hidden, f"the page could not read {hidden}; screenshot {shot}"
    assert len(shown["x-conversation-id"]) == 36  # a UUID
    assert shown["x-ratelimit-limit-requests"] == "600"  # pipelines/gui.yaml
