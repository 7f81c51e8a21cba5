"""Headless Chromium driven over the DevTools protocol: a small CDP client on aiohttp's websocket.

Chromium is started with a fresh profile and every background service off, so it never tries to reach
the network; the DevTools port is the one it picked itself (`--remote-debugging-port=0`), read from the
`DevToolsActivePort` file it writes into the profile.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

# Generous: Chromium starts slowly on a loaded 2-core CI machine.
START_TIMEOUT_S = 60.0
CALL_TIMEOUT_S = 60.0
FLAGS = (
    "--headless",
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-quic",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--window-size=900,800",
    "--remote-debugging-port=0",
)


class BrowserError(Exception):
    """Chromium did not start, or a DevTools call failed; str() says which and why."""


class Page:
    """One tab's DevTools session. Calls are answered in order; events met on the way are kept."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._events: list[dict[str, Any]] = []

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        ident = next(self._ids)
        await self._ws.send_json({"id": ident, "method": method, "params": params})
        async with asyncio.timeout(CALL_TIMEOUT_S):
            while True:
                message = await self._receive()
                if message.get("id") == ident:
                    break
                self._events.append(message)
        if "error" in message:
            raise BrowserError(f"{method}: {message['error']}")
        result: dict[str, Any] = message.get("result", {})
        return result

    async def wait_event(self, method: str) -> dict[str, Any]:
        for seen in self._events:
            if seen.get("method") == method:
                self._events.remove(seen)
                return seen
        async with asyncio.timeout(CALL_TIMEOUT_S):
            while True:
                message = await self._receive()
                if message.get("method") == method:
                    return message
                self._events.append(message)

    def seen(self, method: str) -> list[dict[str, Any]]:
        """The events of `method` met so far and not waited for (e.g. Log.entryAdded after Log.enable)."""
        return [event for event in self._events if event.get("method") == method]

    async def _receive(self) -> dict[str, Any]:
        message = await self._ws.receive()
        if message.type != aiohttp.WSMsgType.TEXT:
            raise BrowserError(f"the DevTools connection ended: {message.type.name}")
        parsed: dict[str, Any] = message.json()
        return parsed

    async def open(self, url: str) -> None:
        """Navigate and wait for the load event (the page's inline scripts have run)."""
        await self.call("Page.enable")
        await self.call("Page.navigate", url=url)
        await self.wait_event("Page.loadEventFired")

    async def evaluate(self, expression: str) -> Any:
        """The expression's value, awaited when it is a promise; a thrown error raises BrowserError."""
        answer = await self.call(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in answer:
            raise BrowserError(f"{expression}: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    async def screenshot(self, path: Path) -> Path:
        shot = await self.call("Page.captureScreenshot", format="png")
        await asyncio.to_thread(_write, path, base64.b64decode(shot["data"]))
        return path


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


async def _devtools_port(profile: Path, process: asyncio.subprocess.Process) -> int:
    marker = profile / "DevToolsActivePort"
    async with asyncio.timeout(START_TIMEOUT_S):
        while not marker.exists() or not marker.read_text().strip():
            if process.returncode is not None:
                raise BrowserError(f"chromium exited with {process.returncode} before it listened")
            await asyncio.sleep(0.1)
    return int(marker.read_text().split()[0])


@contextlib.asynccontextmanager
async def headless_page(chromium: str, profile: Path) -> AsyncIterator[Page]:
    """A fresh headless Chromium (its own profile folder) and its first tab; both end on exit."""
    log = (profile.parent / "chromium.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        chromium, *FLAGS, f"--user-data-dir={profile}", "about:blank",
        stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
    )  # fmt: skip
    try:
        port = await _devtools_port(profile, process)
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/json/list") as answer:
                targets = await answer.json()
            [tab] = [t for t in targets if t["type"] == "page"]
            async with session.ws_connect(tab["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                yield Page(ws)
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()
        log.close()
