"""The playground runs a pipeline on the console session: no API key in the browser, CSRF required,
the signed-in key named in the audit and refused once revoked."""

from __future__ import annotations

from pathlib import Path

from tests.console.conftest import browser, csrf_of, sign_in, signed_in
from tests.core.conftest import REPO, running_gateway, write_config
from tests.fakes.ollama import FakeOllama

BODY = {"model": "phi3", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
VOICE = "/console/api/playground/v1/voice/chat/completions"


async def test_the_playground_streams_a_pipeline_on_the_session(fake: FakeOllama, tmp_path: Path) -> None:
    config = write_config(tmp_path, fake.port, REPO / "pipelines")
    async with running_gateway(config, fake) as gateway, signed_in(gateway) as (session, token):
        async with session.post(VOICE, json=BODY) as response:
            assert response.status == 403  # no CSRF token
        async with session.post(VOICE, json=BODY, headers={"X-CSRF-Token": token}) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/event-stream")
            streamed = await response.text()
        assert streamed.count("data: ") > 2 and streamed.rstrip().endswith("data: [DONE]")
        async with session.post(
            "/console/api/playground/v1/embeddings", json=BODY, headers={"X-CSRF-Token": token}
        ) as response:
            assert response.status == 404


async def test_a_revoked_key_ends_its_console_sessions(fake: FakeOllama, tmp_path: Path) -> None:
    config = write_config(tmp_path, fake.port, REPO / "pipelines")
    async with running_gateway(config, fake) as gateway:
        # A file key with the admin scope, made through the console's own API, signs in.
        async with signed_in(gateway) as (first, token):
            made = {"name": "operator", "scopes": ["admin", "inference"]}
            async with first.post(
                "/console/api/keys/create", json=made, headers={"X-CSRF-Token": token}
            ) as r:
                key = (await r.json())["key"]
        async with browser(gateway) as session:
            assert (await sign_in(session, key)).status == 303
            token = await csrf_of(session)
            async with session.post(VOICE, json=BODY, headers={"X-CSRF-Token": token}) as response:
                assert response.status == 200
                await response.read()
            async with (
                signed_in(gateway) as (other, other_token),
                other.post(
                    "/console/api/keys/revoke",
                    json={"name": "operator"},
                    headers={"X-CSRF-Token": other_token},
                ) as response,
            ):
                assert response.status == 200
            async with session.post(VOICE, json=BODY, headers={"X-CSRF-Token": token}) as response:
                assert response.status == 401
            # The whole console session ends with its key, not only the playground.
            async with session.get("/console/api/keys") as response:
                assert response.status == 401
            async with session.get("/console/keys", allow_redirects=False) as response:
                assert response.status == 303
