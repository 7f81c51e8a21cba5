"""Every agent profile as an OpenAI base URL (`/v1/<profile>`), and `GET /v1/models/{id}`, with the SDK."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.compat.conftest import write_compat_config
from tests.core.conftest import AUTH, CHAT, REPO, TEST_KEY, Gateway, running_gateway
from tests.core.test_reload import start_serve, until_answering
from tests.fakes.ollama import Behavior, FakeOllama

HI: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]


def client(gw: Gateway, base: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gw.url + base, api_key=TEST_KEY, max_retries=0)


async def test_a_model_is_retrieved_by_id(gateway: Gateway) -> None:
    oai = client(gateway, "/v1")
    model = await oai.models.retrieve("phi3")
    assert (model.id, model.object, model.owned_by) == ("phi3", "model", "citadel")
    assert (await oai.models.retrieve("phi3:latest")).id == "phi3:latest"
    with pytest.raises(openai.NotFoundError) as raised:
        await oai.models.retrieve("nope")
    assert raised.value.code == "model_not_found"


@pytest.mark.parametrize("profile", ["voice", "gui", "research", "copilot"])
async def test_a_profile_base_url_lists_and_retrieves_models(gateway: Gateway, profile: str) -> None:
    oai = client(gateway, f"/v1/{profile}")
    listed = [m.id async for m in oai.models.list()]
    assert "phi3" in listed
    assert (await oai.models.retrieve("coder")).id == "coder"


@pytest.mark.parametrize(("profile", "per_event"), [("voice", 1), ("gui", 10), ("research", 40)])
async def test_a_chat_profile_base_url_serves_chat_with_its_chunking(
    gateway: Gateway, profile: str, per_event: int
) -> None:
    gateway.fake.next(Behavior.counted(40, tokens_per_write=40))
    oai = client(gateway, f"/v1/{profile}")
    stream = await oai.chat.completions.create(model="phi3", messages=HI, stream=True)
    pieces = [c.choices[0].delta.content async for c in stream if c.choices and c.choices[0].delta.content]
    assert "".join(pieces) == "".join(f"w{i} " for i in range(40))
    assert len(pieces) == 40 // per_event
    whole = await oai.chat.completions.create(model="phi3", messages=HI, stream=False)
    assert whole.choices[0].message.content == "Hello, world!"


async def test_the_copilot_base_url_serves_completions(gateway: Gateway) -> None:
    oai = client(gateway, "/v1/copilot")
    stream = await oai.completions.create(model="coder", prompt="def add(a, b):\n", suffix="\n", stream=True)
    assert "".join([c.choices[0].text async for c in stream if c.choices]) == "Hello, world!"


async def test_a_profile_serves_both_apis_with_its_own_chunking(gateway: Gateway) -> None:
    """An IDE plugin that speaks chat reaches the copilot profile; a completions client reaches voice."""
    gateway.fake.next(Behavior.counted(12, tokens_per_write=12))
    stream = await client(gateway, "/v1/copilot").chat.completions.create(
        model="coder", messages=HI, stream=True
    )
    pieces = [c.choices[0].delta.content async for c in stream if c.choices and c.choices[0].delta.content]
    assert len(pieces) == 3 and "".join(pieces) == "".join(f"w{i} " for i in range(12))  # 5 per event
    assert [r.path for r in gateway.fake.requests][-1] == "/api/chat"
    gateway.fake.next(Behavior.counted(3, tokens_per_write=3))
    texts = await client(gateway, "/v1/voice").completions.create(model="phi3", prompt="x", stream=True)
    words = [c.choices[0].text async for c in texts if c.choices and c.choices[0].text]
    assert words == ["w0 ", "w1 ", "w2 "]
    assert [r.path for r in gateway.fake.requests][-1] == "/api/generate"


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("POST", "/v1/nope/chat/completions", 404),
        ("GET", "/v1/nope/models", 404),
        ("GET", "/v1/nope/models/phi3", 404),
        # Not an agent profile: a pipeline with a route of its own, not a base URL.
        ("POST", "/v1/embeddings/chat/completions", 404),
        ("GET", "/v1/research/chat/completions", 405),
    ],
)
async def test_unknown_profiles_and_methods_are_refused(
    gateway: Gateway, method: str, path: str, status: int
) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, headers=AUTH) as http:
        response = await http.request(method, path, json=CHAT if method == "POST" else None)
    assert response.status_code == status
    assert response.json()["error"]["message"]


async def test_profile_models_need_a_key(gateway: Gateway) -> None:
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        assert (await http.get("/v1/voice/models")).status_code == 401
        assert (await http.get("/v1/models/phi3")).status_code == 401


async def test_a_profile_added_by_a_reload_is_a_base_url_at_once(tmp_path: Path) -> None:
    pipelines = tmp_path / "pipelines"
    shutil.copytree(REPO / "pipelines", pipelines)
    async with FakeOllama() as fake:
        config = write_compat_config(tmp_path, fake.port)
        config.write_text(config.read_text().replace(str(REPO / "pipelines"), str(pipelines)))
        process, url = start_serve(config, 1, subprocess.DEVNULL)
        try:
            await until_answering(url, ok=True)
            oai = client(Gateway(url, fake, config), "/v1/scribe")
            with pytest.raises(openai.NotFoundError):
                await oai.chat.completions.create(model="phi3", messages=HI)
            (pipelines / "scribe.yaml").write_text("format: chat\nagent: true\n")
            process.send_signal(signal.SIGHUP)
            for _ in range(100):
                try:
                    answer = await oai.chat.completions.create(model="phi3", messages=HI)
                    break
                except openai.NotFoundError:
                    await asyncio.sleep(0.05)
            else:
                pytest.fail("the new profile was not served after the reload")
            assert answer.choices[0].message.content == "Hello, world!"
            assert [m.id async for m in oai.models.list()]
        finally:
            process.send_signal(signal.SIGTERM)
            await asyncio.to_thread(process.wait, 20)


async def test_a_path_a_pipeline_file_names_stays_that_pipelines(tmp_path: Path) -> None:
    """An embeddings route that happens to look like a profile's inference path is not taken from it."""
    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    (pipelines / "team.yaml").write_text("format: embeddings\nroutes: [/v1/team/completions]\n")
    (pipelines / "voice.yaml").write_text("format: chat\nagent: true\n")
    async with FakeOllama() as fake:
        config = write_compat_config(tmp_path, fake.port)
        config.write_text(config.read_text().replace(str(REPO / "pipelines"), str(pipelines)))
        async with running_gateway(config, fake, server="uvicorn") as gw:
            async with httpx.AsyncClient(base_url=gw.url, headers=AUTH) as http:
                embed = {"model": "nomic-embed-text", "input": "x"}
                response = await http.post("/v1/team/completions", json=embed)
            assert response.status_code == 200 and len(response.json()["data"][0]["embedding"]) == 768
            answer = await client(gw, "/v1/voice").chat.completions.create(model="phi3", messages=HI)
            assert answer.choices[0].message.content == "Hello, world!"
