"""Two gateway instances in front of one Redis enforce one limit, and tell the client so."""

from __future__ import annotations

import shutil
from pathlib import Path

import aiohttp

from tests.cache.conftest import redis_yaml
from tests.core.conftest import AUTH, CHAT, REPO, running_gateway, write_config
from tests.fakes.ollama import Behavior, FakeOllama

LIMIT = 4


async def test_two_gateways_share_one_redis_limit(tmp_path: Path, redis_url: str, redis_prefix: str) -> None:
    pipelines = tmp_path / "pipelines"
    shutil.copytree(REPO / "pipelines", pipelines)
    chat = pipelines / "chat.yaml"
    chat.write_text(chat.read_text().replace("requests_per_minute: 600", f"requests_per_minute: {LIMIT}"))
    redis = f"redis: {redis_yaml(redis_url, redis_prefix)}"
    async with FakeOllama(behavior=Behavior.counted(3)) as fake:
        one, two = tmp_path / "one", tmp_path / "two"
        one.mkdir()
        two.mkdir()
        config_one = write_config(one, fake.port, pipelines, extra=redis)
        config_two = write_config(two, fake.port, pipelines, extra=redis)
        async with (
            running_gateway(config_one, fake) as first,
            running_gateway(config_two, fake) as second,
            aiohttp.ClientSession(headers=AUTH) as session,
        ):
            statuses = []
            for index in range(LIMIT + 4):
                gateway = first if index % 2 == 0 else second
                async with session.post(gateway.url + "/v1/chat/completions", json=CHAT) as response:
                    statuses.append(response.status)
                    if response.status == 200:
                        assert response.headers["x-ratelimit-limit-requests"] == str(LIMIT)
                    else:
                        error = (await response.json())["error"]
                        assert error["code"] == "rate_limit_exceeded"
                        assert int(response.headers["Retry-After"]) >= 1
    assert statuses == [200] * LIMIT + [429] * 4
    assert fake.count("/api/chat") == LIMIT
