"""A failover as a trace shows it: one upstream span per attempt, the failed one an error, under one
request span (issue: tracing)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from opentelemetry.proto.trace.v1.trace_pb2 import Status

from tests.fakes.ollama import Behavior, FakeOllama
from tests.fleet.conftest import chat, fleet_gateway, post, write_fleet_config
from tests.tracing.receiver import HttpReceiver, attributes


async def test_each_attempt_of_a_failover_has_its_span(fakes: dict[str, FakeOllama], tmp_path: Path) -> None:
    fakes["gpu-a"].next(
        Behavior(error_status=500, error_body={"error": "out of memory"})
    )  # phi3: gpu-a first
    async with HttpReceiver() as receiver:
        tracing = f"monitoring: {{tracing: {{enabled: true, endpoint: '{receiver.endpoint}'}}}}"
        config = write_fleet_config(tmp_path, fakes, top=tracing)
        async with fleet_gateway(config, fakes) as gw:
            status, headers, _ = await post(gw.url, chat("phi3"))
            assert status == 200 and headers["x-citadel-backend"] != "gpu-a"
        received = receiver.received
    [root] = [span for span in received.roots() if span.name.startswith("chat ")]
    attempts = [span for span in received.children(root) if span.name.startswith("chat phi3")]
    assert len(attempts) == 2, [span.name for span in received.children(root)]
    failed, answered = sorted(attempts, key=lambda span: span.start_time_unix_nano)
    assert failed.status.code == Status.STATUS_CODE_ERROR and answered.status.code != Status.STATUS_CODE_ERROR
    ports = [attributes(span.attributes)["server.port"] for span in (failed, answered)]
    assert ports[0] == fakes["gpu-a"].port and ports[1] != ports[0]


async def test_a_wait_in_the_queue_has_its_span(fakes: dict[str, FakeOllama], tmp_path: Path) -> None:
    """gpu-b runs one mixtral request at a time: the second waits in the gateway's queue, a span of its
    own that ends before its call to Ollama starts; the first did not wait (no such span)."""
    fakes["gpu-b"].behavior = Behavior(first_token_delay_s=0.2)
    async with HttpReceiver() as receiver:
        tracing = f"monitoring: {{tracing: {{enabled: true, endpoint: '{receiver.endpoint}'}}}}"
        config = write_fleet_config(
            tmp_path, fakes, per_backend={"gpu-b": {"max_concurrent": 1}}, top=tracing
        )
        async with fleet_gateway(config, fakes) as gw:
            first = asyncio.create_task(post(gw.url, chat("mixtral")))
            await asyncio.sleep(0.05)
            second = await post(gw.url, chat("mixtral"))
            assert (await first)[0] == 200 and second[0] == 200
        received = receiver.received
    roots = sorted(
        (span for span in received.roots() if span.name.startswith("chat ")),
        key=lambda s: s.start_time_unix_nano,
    )
    assert len(roots) == 2
    assert "queue wait" not in {span.name for span in received.children(roots[0])}
    children = {span.name: span for span in received.children(roots[1])}
    wait, upstream = children["queue wait"], children["chat mixtral:latest"]
    assert wait.end_time_unix_nano - wait.start_time_unix_nano > 50_000_000  # the first held it 200 ms
    assert wait.end_time_unix_nano <= upstream.start_time_unix_nano
