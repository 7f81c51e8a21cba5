"""`python -m bench.overload`: twice the fleet's capacity of mixed traffic, and how each class fares.

Two fake Ollama servers (each answer: 20 tokens 10 ms apart, ~200 ms), `max_concurrent: 2` on each: the
fleet serves about 20 requests a second. For `--seconds` [10] requests arrive at 40 a second (Poisson),
20% voice, 30% chat, 50% gui, streamed; per class: admitted, shed (503 with Retry-After), and the time to
the first token (p50 and p99 of those admitted). The pipelines are the repository's with only their
chunking stage (no auth, no rate limit), so what is measured is admission.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.procs import Server, bare_pipelines, free_port, start_fake

CLASSES = {"voice": 0.2, "chat": 0.3, "gui": 0.5}
PATHS = {
    "voice": "/v1/voice/chat/completions",
    "chat": "/v1/chat/completions",
    "gui": "/v1/gui/chat/completions",
}
BODY = {"model": "phi3", "messages": [{"role": "user", "content": "Say something."}], "stream": True}


def _config(workdir: Path, fakes: list[Server], pipelines: Path) -> Path:
    backends = "".join(
        f"    - {{name: gpu-{i}, url: 'http://127.0.0.1:{f.port}', max_concurrent: 2}}\n"
        for i, f in enumerate(fakes)
    )
    path = workdir / "overload.yaml"
    path.write_text(
        "ollama:\n  backends:\n" + backends + '  models: [{name: "phi3:latest"}]\n'
        'model_routing: {aliases: {phi3: "phi3:latest"}}\n'
        f"paths: {{pipelines: {pipelines}, data: {workdir / 'data'}, logs: {workdir / 'log'},"
        f" backups: {workdir / 'backups'}}}\n"
        "monitoring: {logging: {level: WARNING}}\n"
    )
    return path


async def _one(
    session: aiohttp.ClientSession, url: str, klass: str, out: dict[str, list[float | None]]
) -> None:
    started = time.perf_counter()
    async with session.post(url + PATHS[klass], json=BODY) as response:
        if response.status != 200:
            await response.read()
            out[klass].append(None)
            return
        async for line in response.content:
            if b'"content":"' in line:
                out[klass].append(time.perf_counter() - started)
                break
        await response.read()


async def _load(url: str, seconds: float, rate: float) -> dict[str, list[float | None]]:
    out: dict[str, list[float | None]] = {k: [] for k in CLASSES}
    rng = random.Random(15)
    tasks = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            klass = rng.choices(list(CLASSES), weights=list(CLASSES.values()))[0]
            tasks.append(asyncio.create_task(_one(session, url, klass, out)))
            await asyncio.sleep(rng.expovariate(rate))
        await asyncio.gather(*tasks, return_exceptions=True)
    return out


def _ms(values: list[float], q: float) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=40.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        workdir = Path(tmp)
        fakes = []
        for i in range(2):
            fake = start_fake(f"fake-{i}", workdir, tokens=20, token_delay_ms=10)
            stack.callback(fake.stop)
            fakes.append(fake)
        config = _config(workdir, fakes, bare_pipelines(workdir, keep=("chunking",)))
        port = free_port()
        binary = Path(sys.executable).with_name("citadel-proxy")
        argv = [
            str(binary),
            "serve",
            "--config",
            str(config),
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
        ]
        gateway = Server("gateway", argv, port, workdir / "gateway.log")
        stack.callback(gateway.stop)
        gateway.wait_ready("/health")
        out = asyncio.run(_load(f"http://127.0.0.1:{port}", args.seconds, args.rate))
    print(f"overload: {args.rate:.0f} requests/s for {args.seconds:.0f} s, fleet capacity ~20/s")
    print("| class | admitted | shed | TTFT p50 ms | TTFT p99 ms |")
    print("|---|---|---|---|---|")
    for klass, results in out.items():
        admitted = [r for r in results if r is not None]
        shed = len(results) - len(admitted)
        print(f"| {klass} | {len(admitted)} | {shed} | {_ms(admitted, 0.5)} | {_ms(admitted, 0.99)} |")


if __name__ == "__main__":
    main()
