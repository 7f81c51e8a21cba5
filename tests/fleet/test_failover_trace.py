"""A failover as a trace shows it: one upstream span per attempt, the failed one an error, under one
request span (issue: tracing)."""

from __future__ import annotations

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
