"""What tracing costs: nothing from OpenTelemetry is loaded when it is disabled, and the in-process
measurement (bench/tracing_cost.py) runs and counts the spans a traced request exports."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from bench.tracing_cost import encoder_floor, measure
from tests.core.conftest import REPO


def test_disabled_loads_no_tracing(tmp_path: Path) -> None:
    (tmp_path / "citadel.yaml").write_text(f"paths: {{pipelines: {REPO / 'pipelines'}, data: {tmp_path}}}\n")
    script = textwrap.dedent(
        f"""
        import asyncio, contextlib, sys
        from pathlib import Path
        from citadel_proxy.app import create_app
        from citadel_proxy.config import load_config
        from citadel_proxy.observability.tracing import open_tracing

        config = load_config(Path("{tmp_path / "citadel.yaml"}"))
        create_app(config)

        async def main():
            async with contextlib.AsyncExitStack() as stack:
                assert await open_tracing(config, stack) is None

        asyncio.run(main())
        # (redis-py imports opentelemetry.sdk.metrics by itself when it is installed: not ours to load.)
        ours = ("citadel_proxy.observability.otlp", "opentelemetry.sdk.trace", "opentelemetry.exporter")
        loaded = sorted(name for name in sys.modules if name.startswith(ours))
        print(loaded)
        assert not loaded, loaded
        """
    )
    command = [sys.executable, "-c", script]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr + result.stdout


def test_measurement_runs() -> None:
    # A streamed chat where nothing but Ollama waits: the request's span and the upstream attempt's.
    figures = measure(requests=200, rounds=1)
    assert figures.spans_per_request == 2
    assert figures.disabled_us > 0 and figures.enabled_us > 0 and figures.otlp_bytes_per_request > 0
    assert figures.export_thread_us > 0 and figures.verdict in ("PASS", "MISS")
    # Two stages that wait (as Redis calls do): a span each.
    assert measure(requests=200, rounds=1, waits=2).spans_per_request == 4


def test_encoder_floor_runs() -> None:
    # The SDK's encoder alone (`--floor`): every row measured (no figure is asserted: timings).
    floor = encoder_floor(rounds=1)
    assert len(floor) == 7 and all(us == us for us in floor.values())
