"""Every curl in the README's Endpoints and Management sections, run in order against `make run`'s config
(`database: null`, `redis: null`) with the fake Ollama: each one answers 200."""

from __future__ import annotations

import asyncio
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from citadel_proxy.auth.keys import hash_key
from tests.core.conftest import REPO, TEST_KEY, running_gateway
from tests.fakes.ollama import FakeOllama

README = (REPO / "README.md").read_text()


@dataclass
class Curl:
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    data: str | None = None

    @property
    def method(self) -> str:
        return "GET" if self.data is None else "POST"


def section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.index("\n## ", start + 1)
    return README[start:end]


def curls(text: str) -> list[str]:
    """The curl commands of the ```sh blocks in `text`, continuation lines joined, comments dropped."""
    commands: list[str] = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        tokens = shlex.split(block.replace("\\\n", " "), comments=True)
        for token in tokens:
            if token == "curl":
                commands.append("")
            elif commands:
                commands[-1] += " " + shlex.quote(token)
    return commands


def parse(command: str) -> Curl:
    """The curl options the README uses: -N, -H, -d and the URL."""
    args = iter(shlex.split(command))
    curl = Curl(url="")
    for arg in args:
        if arg == "-N":
            continue
        if arg == "-H":
            name, _, value = next(args).partition(":")
            curl.headers[name.strip()] = value.strip()
        elif arg == "-d":
            curl.data = next(args)
            # What curl sends with -d when the example names no type.
            curl.headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
        else:
            assert not arg.startswith("-"), f"an option the test does not know: {arg}"
            curl.url = arg
    return curl


def make_run_config(tmp_path: Path, ollama_port: int) -> Path:
    """conf/citadel.yaml as shipped, but for the fake's port, paths under tmp_path, and the app key the
    README creates (scopes inference and embeddings)."""
    text = (REPO / "conf" / "citadel.yaml").read_text()
    assert "database: null" in text and "redis: null" in text and "port: 11434" in text
    text = text.replace("port: 11434", f"port: {ollama_port}").replace("../var/", f"{tmp_path}/var/")
    text = text.replace("../pipelines", str(REPO / "pipelines"))
    key = f"{{name: my-app, sha256: {hash_key(TEST_KEY).hex()}, scopes: [inference, embeddings]}}"
    path = tmp_path / "conf" / "citadel.yaml"
    path.parent.mkdir()
    path.write_text(text + f"\nauth:\n  keys:\n    - {key}\n")
    return path


async def a_conversation(session: aiohttp.ClientSession, url: str, admin: str) -> str:
    """The id of a stored conversation (the writer stores records a batch after the answer)."""
    listing = url + "/management/audit/conversations?limit=1"
    async with asyncio.timeout(20):
        while True:
            async with session.get(listing, headers={"Authorization": f"Bearer {admin}"}) as response:
                listed = (await response.json())["data"]
            if listed:
                return str(listed[0]["id"])
            await asyncio.sleep(0.1)


async def test_every_readme_example_answers_200_on_make_runs_config(tmp_path: Path) -> None:
    text = section("Endpoints")
    endpoints = curls(text)
    assert len(endpoints) == len(re.findall(r"^curl ", text, re.M)) > 20, endpoints  # each one found
    async with FakeOllama() as fake, running_gateway(make_run_config(tmp_path, fake.port), fake) as gw:
        admin = (tmp_path / "var" / "data" / "admin.key").read_text().strip()
        headers = {
            "H": f"Authorization: Bearer {TEST_KEY}",
            "A": f"Authorization: Bearer {admin}",
            "CITADEL_KEY": TEST_KEY,  # the Anthropic example sends it as x-api-key
        }
        failures: list[str] = []
        conversation: str | None = None
        async with aiohttp.ClientSession() as session:
            for command in endpoints:
                if "CONVERSATION-ID" in command:
                    conversation = conversation or await a_conversation(session, gw.url, admin)
                    command = command.replace("CONVERSATION-ID", conversation)
                for name, value in headers.items():
                    command = command.replace(f"${name}", value)
                curl = parse(command)
                url = gw.url + curl.url.removeprefix("localhost:8002")
                async with session.request(
                    curl.method, url, headers=curl.headers, data=curl.data
                ) as response:
                    body = await response.read()
                    # A stream's error comes as an event after its 200.
                    if response.status != 200 or body.startswith(b'{"error"') or b'data: {"error"' in body:
                        failures.append(f"{curl.method} {curl.url}: {response.status} {body[:300]!r}")
        assert failures == []
