"""The operator's console in a real headless Chromium: sign in, Overview, Models (pull to 100%), Keys
(create, revoke), Audit (find by text), Pipelines (an error, then an edit served), Playground.

Each page's screenshot is kept under var/test-artifacts/console/ (ignored by git); the Overview is also
taken at 390 px wide, where nothing may scroll sideways.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.browser.chromium import BrowserError, Page, headless_page
from tests.browser.test_stream_in_browser import report_screenshot
from tests.core.conftest import AUTH, REPO, TEST_KEY, running_gateway, write_config
from tests.deploy.harness import require_tool
from tests.fakes.ollama import Behavior, FakeOllama

ARTIFACTS = REPO / "var" / "test-artifacts" / "console"
WAIT_S = 30.0
SECRET_WORDS = "the zebra crossing at dawn"


async def until(page: Page, expression: str, what: str) -> Any:
    """Poll `expression` until it is truthy (a navigation in between is waited out)."""
    last: Any = None
    try:
        async with asyncio.timeout(WAIT_S):
            while True:
                try:
                    last = await page.evaluate(expression)
                except BrowserError as exc:
                    last = exc
                else:
                    if last:
                        return last
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"{what}: still {last!r} after {WAIT_S} s") from None


async def shoot(page: Page, name: str, width: int = 1280) -> Path:
    await page.call(
        "Emulation.setDeviceMetricsOverride", width=width, height=900, deviceScaleFactor=1, mobile=False
    )
    await asyncio.sleep(0.3)
    return await page.screenshot(ARTIFACTS / f"{name}.png")


async def visit(page: Page, url: str, ready: str) -> None:
    await page.call("Page.navigate", url=url)
    # Loaded: the deferred scripts have run, so a click is handled by them, not by the browser.
    await until(page, f"document.readyState === 'complete' && location.href === {js(url)} && ({ready})", url)


def js(value: str) -> str:
    return json.dumps(value)


def q(selector: str) -> str:
    return f"document.querySelector({js(selector)})"


async def fill(page: Page, selector: str, value: str) -> None:
    await page.evaluate(f"{q(selector)}.value = {js(value)}; true")


async def click(page: Page, selector: str) -> None:
    await page.evaluate(f"{q(selector)}.click(); true")


def text(selector: str) -> str:
    return f"{q(selector)}.textContent"


async def sign_in(page: Page, base: str) -> None:
    # Without a session the console sends the browser to its sign-in form.
    await page.call("Page.navigate", url=base + "/console/")
    await until(page, "location.pathname === '/console/login' && document.readyState === 'complete'", "login")
    await shoot(page, "login")
    await fill(page, "#key", TEST_KEY)
    await page.evaluate(f"{q('form')}.submit(); true")
    await until(page, "location.pathname === '/console/' && document.readyState === 'complete'", "signed in")


async def overview(page: Page) -> None:
    await until(page, f"{text('#live')} === 'live'", "the SSE snapshot")
    backends = await page.evaluate(text("#backends tbody"))
    assert "default" in backends and "healthy" in backends  # the one-server form is the backend `default`
    await until(page, f"{text('#ttft tbody')}.includes('/v1/chat/completions')", "TTFT")
    await shoot(page, "overview-390", width=390)
    # Nothing scrolls sideways at a phone's width: wide tables scroll inside themselves.
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390
    await shoot(page, "overview")
    assert await page.evaluate("document.documentElement.scrollWidth") <= 1280
    await keyboard(page)


async def press_tab(page: Page) -> str:
    for kind in ("keyDown", "keyUp"):
        await page.call("Input.dispatchKeyEvent", type=kind, key="Tab", code="Tab", windowsVirtualKeyCode=9)
    return str(await page.evaluate("document.activeElement.textContent.trim()"))


async def keyboard(page: Page) -> None:
    """From the top of the page, Tab reaches the skip link, then every page's link, then sign-out."""
    await page.evaluate("document.activeElement.blur(); window.scrollTo(0, 0); true")
    reached = [await press_tab(page) for _ in range(8)]
    assert reached == [
        "Skip to content", "Overview", "Models", "Keys", "Audit", "Pipelines", "Playground", "Sign out",
    ]  # fmt: skip


async def models(page: Page, base: str) -> None:
    await visit(page, base + "/console/models", f"{text('#models tbody')}.includes('phi3:latest')")
    await fill(page, "#pull-name", "all-minilm")
    await click(page, "#pull-form button")
    done = f"{q('#pull-bar')}.value === 100 && {text('#pull-text')} === 'success'"
    await until(page, done, "pull at 100%")
    assert await page.evaluate(text("#pull-percent")) == "100%"
    await until(page, f"{text('#models tbody')}.includes('all-minilm')", "pulled model listed")
    await shoot(page, "models")


async def keys(page: Page, base: str) -> None:
    await visit(page, base + "/console/keys", f"{text('#keys tbody')}.includes('tester')")
    await fill(page, "#key-name", "made-in-browser")
    await click(page, "#key-form button[type=submit]")
    made = await until(page, f"!{q('#new-key')}.hidden && {text('#new-key-value')}", "the new key")
    revoke = '[data-revoke="made-in-browser"]'
    await until(page, f"!!{q(revoke)}", "the key listed")
    await shoot(page, "keys")
    async with aiohttp.ClientSession(base, headers={"Authorization": f"Bearer {made}"}) as session:
        async with session.get("/v1/models") as response:
            assert response.status == 200
        await page.evaluate("window.confirm = () => true; true")
        await click(page, revoke)
        await until(page, f"!{q(revoke)} && {text('#keys tbody')}.includes('revoked')", "revoked")
        async with session.get("/v1/models") as response:
            assert response.status == 401


async def audit(page: Page, base: str) -> None:
    async with aiohttp.ClientSession(headers=AUTH) as session:
        chat = {"model": "phi3", "stream": False, "messages": [{"role": "user", "content": SECRET_WORDS}]}
        async with session.post(base + "/v1/chat/completions", json=chat) as response:
            assert response.status == 200
    await visit(page, base + "/console/audit", f"!!{q('#audit-text')}")
    await fill(page, "#audit-text", "ZEBRA crossing")
    async with asyncio.timeout(WAIT_S):
        while True:  # the audit writer stores the record a moment after the answer
            await click(page, "#audit-form button")
            await asyncio.sleep(0.3)
            if await page.evaluate("document.querySelectorAll('#conversations tbody tr').length") == 1:
                break
    await click(page, "[data-conversation]")
    await until(page, f"{text('#messages')}.includes({js(SECRET_WORDS)})", "the conversation")
    await shoot(page, "audit")


async def edit(page: Page, before: str, after: str) -> None:
    await page.evaluate(
        f"t = {q('#pipeline-text')}; t.value = t.value.replace({js(before)}, {js(after)}); true"
    )


async def pipelines(page: Page, base: str) -> None:
    await visit(page, base + "/console/pipelines", f"{q('#pipeline-text')}.value.includes('routes:')")
    await fill(page, "#pipeline-file", "voice.yaml")
    await page.evaluate(f"{q('#pipeline-file')}.dispatchEvent(new Event('change')); true")
    await until(page, f"{q('#pipeline-text')}.value.includes('/v1/voice/')", "voice.yaml")
    await edit(page, "chunk_size: 1", "chunk_size: lots")
    await click(page, "#pipeline-apply")
    message = await until(page, f"!{q('#pipeline-error')}.hidden && {text('#pipeline-error')}", "the error")
    assert "voice.yaml:" in message and "chunk_size" in message
    await shoot(page, "pipelines-error")
    await edit(page, "chunk_size: lots", "chunk_size: 1")
    await edit(page, "requests_per_minute: 600", "requests_per_minute: 321")
    await click(page, "#pipeline-apply")
    await until(page, f"{text('#pipeline-result')} === 'applied and reloaded'", "applied")
    await shoot(page, "pipelines")
    # Served: the voice route now answers with the edited limit.
    async with aiohttp.ClientSession(headers=AUTH) as session:
        chat = {"model": "phi3", "stream": False, "messages": [{"role": "user", "content": "hi"}]}
        async with session.post(base + "/v1/voice/chat/completions", json=chat) as response:
            assert response.status == 200
            assert response.headers["x-ratelimit-limit-requests"] == "321"


async def playground(page: Page, base: str) -> None:
    await visit(page, base + "/console/playground", f"!!{q('#play-form')}")
    await click(page, "#play-form button[type=submit]")
    done = "[...document.querySelectorAll('.lane')].map((l) => l.dataset.done || '').join(',')"
    try:
        await until(page, f"{done} === 'ok,ok,ok'", "three lanes streamed")
    except AssertionError:
        lanes = await page.evaluate("[...document.querySelectorAll('.lane')].map((l) => l.textContent)")
        raise AssertionError(f"the lanes: {lanes}") from None
    texts = await page.evaluate("[...document.querySelectorAll('.lane .text')].map((t) => t.textContent)")
    assert all("Hello" in t for t in texts), texts
    assert await page.evaluate("document.querySelectorAll('.lane svg rect').length") >= 3
    await shoot(page, "playground")


async def test_an_operator_drives_the_gateway_from_the_console(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    chromium = require_tool("chromium", "chromium")
    folder = tmp_path / "pipelines"
    shutil.copytree(REPO / "pipelines", folder)
    async with FakeOllama(pull_step_delay_s=0.05) as fake:
        fake.set_behavior(
            "phi3:latest", Behavior(tokens=["Hello", " from", " the", " console", "."], token_delay_s=0.02)
        )
        fake.set_behavior("codellama:code", Behavior(tokens=["Hello", " code"], token_delay_s=0.02))
        config = write_config(tmp_path, fake.port, folder)
        async with running_gateway(config, fake) as gw:
            # A streamed answer first, so the Overview has a time to first token to draw.
            async with aiohttp.ClientSession(headers=AUTH) as session:
                body = {"model": "phi3", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
                async with session.post(gw.url + "/v1/chat/completions", json=body) as response:
                    await response.read()
            async with headless_page(chromium, tmp_path / "chromium-profile") as page:
                await page.call("Page.enable")
                await page.call("Log.enable")
                await sign_in(page, gw.url)
                await overview(page)
                await models(page, gw.url)
                await keys(page, gw.url)
                await audit(page, gw.url)
                await pipelines(page, gw.url)
                await playground(page, gw.url)
                # The pages live within their Content-Security-Policy: Chromium reported no violation.
                logged = [e["params"]["entry"].get("text", "") for e in page.seen("Log.entryAdded")]
                assert not [text for text in logged if "Content Security Policy" in text], logged
    report_screenshot(request.config, ARTIFACTS)
