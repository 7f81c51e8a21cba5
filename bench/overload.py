"""`python -m bench.overload`: twice the fleet's capacity of mixed traffic, and how each class fares.

Two fake Ollama servers (each answer: 20 tokens 10 ms apart, ~200 ms), `max_concurrent: 2` on each: the
fleet serves about 20 requests a second. For `--seconds` [12] requests arrive at `--rate` [40] a second
(Poisson), 20% voice, 30% chat, 50% gui, streamed; per class: admitted, shed (503 with Retry-After, or,
once its stream was open while it waited, its `backends_busy` error event), and the time to the first
token (p50 and p99 of those admitted). The pipelines are the repository's with only their chunking stage
(no auth, no rate limit), so what is measured is admission. The check: voice's time to first token p99
within the voice pipeline's `max_queue_ms` (its budget for waiting, 1000 ms as shipped), and no voice
request shed, while gui absorbs the waiting.

`python -m bench` ends with this scenario (`section`, 12 s of load, 5 s with --quick) and with the
scheduling overhead of bench/admission.py, both in the results JSON under "admission".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench import admission
from bench.procs import REPO, Server, bare_pipelines, free_port, start_fake

CLASSES = {"voice": 0.2, "chat": 0.3, "gui": 0.5}
PATHS = {
    "voice": "/v1/voice/chat/completions",
    "chat": "/v1/chat/completions",
    "gui": "/v1/gui/chat/completions",
}
BODY = {"model": "phi3", "messages": [{"role": "user", "content": "Say something."}], "stream": True}
CAPACITY_PER_S = 20.0  # 2 backends x 2 slots / ~0.2 s per answer
SHED = "shed"
ERROR = "error"


@dataclass(frozen=True, slots=True)
class ClassRow:
    name: str
    admitted: int
    shed: int
    errors: int
    ttft_p50_ms: float | None
    ttft_p99_ms: float | None

    def line(self) -> str:
        cells = [self.name, str(self.admitted), str(self.shed), _ms(self.ttft_p50_ms), _ms(self.ttft_p99_ms)]
        return "| " + " | ".join(cells) + " |" + (f" {self.errors} errors" if self.errors else "")


@dataclass(frozen=True, slots=True)
class Overload:
    rate: float
    seconds: float
    rows: list[ClassRow]
    voice_budget_ms: float  # the voice pipeline's max_queue_ms

    @property
    def voice(self) -> ClassRow:
        return next(r for r in self.rows if r.name == "voice")

    @property
    def verdict(self) -> str:
        voice = self.voice
        p99 = voice.ttft_p99_ms
        ok = p99 is not None and p99 <= self.voice_budget_ms and voice.shed == 0 and voice.errors == 0
        return "PASS" if ok else "MISS"

    def lines(self) -> list[str]:
        voice = self.voice
        return [
            f"overload: {self.rate:.0f} requests/s for {self.seconds:.0f} s, 20% voice, 30% chat, 50% gui,"
            f" against a fleet that serves ~{CAPACITY_PER_S:.0f}/s (2 fake backends x max_concurrent 2,"
            " ~200 ms per streamed answer; one worker)",
            "| class | admitted | shed | TTFT p50 ms | TTFT p99 ms |",
            "|---|---|---|---|---|",
            *(row.line() for row in self.rows),
            f"{self.verdict}  voice TTFT p99 {_ms(voice.ttft_p99_ms)} ms within its budget, the voice"
            f" pipeline's max_queue_ms {self.voice_budget_ms:.0f} ms, with {voice.shed} voice requests shed",
        ]

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": self.verdict}


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _quantile_ms(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def voice_budget_ms() -> float:
    from ruamel.yaml import YAML  # the gateway's own YAML library

    spec = YAML(typ="safe").load(REPO / "pipelines" / "voice.yaml")
    return float(spec.get("max_queue_ms", 0))


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
    session: aiohttp.ClientSession, url: str, klass: str, out: dict[str, list[float | str]]
) -> None:
    started = time.perf_counter()
    try:
        async with session.post(url + PATHS[klass], json=BODY) as response:
            if response.status != 200:
                await response.read()
                shed = response.status == 503 and "Retry-After" in response.headers
                out[klass].append(SHED if shed else ERROR)
                return
            first: float | str = ERROR
            async for line in response.content:
                # The first token, not the role-only first event ("content":"").
                if b'"content":"' in line and b'"content":""' not in line:
                    first = time.perf_counter() - started
                    break
                if b'"backends_busy"' in line:
                    # Refused after waiting: the stream was open (keep-alive comments while it waited),
                    # so the refusal is its error event.
                    first = SHED
                    break
            await response.read()
            out[klass].append(first)
    except (aiohttp.ClientError, OSError):
        out[klass].append(ERROR)


async def _load(url: str, seconds: float, rate: float) -> dict[str, list[float | str]]:
    out: dict[str, list[float | str]] = {k: [] for k in CLASSES}
    rng = random.Random(15)
    tasks = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            klass = rng.choices(list(CLASSES), weights=list(CLASSES.values()))[0]
            tasks.append(asyncio.create_task(_one(session, url, klass, out)))
            await asyncio.sleep(rng.expovariate(rate))
        await asyncio.gather(*tasks)
    return out


def run(seconds: float = 12.0, rate: float = 40.0) -> Overload:
    """Start two fakes and a one-worker gateway, offer the load, and tabulate it per class."""
    with tempfile.TemporaryDirectory(prefix="citadel-overload-") as tmp, contextlib.ExitStack() as stack:
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
        out = asyncio.run(_load(f"http://127.0.0.1:{port}", seconds, rate))
    rows = []
    for klass, results in out.items():
        firsts = [r for r in results if isinstance(r, float)]
        rows.append(
            ClassRow(
                name=klass,
                admitted=len(firsts),
                shed=results.count(SHED),
                errors=results.count(ERROR),
                ttft_p50_ms=_quantile_ms(firsts, 0.5),
                ttft_p99_ms=_quantile_ms(firsts, 0.99),
            )
        )
    return Overload(rate, seconds, rows, voice_budget_ms())


def section(json_path: Path, quick: bool) -> None:
    """`python -m bench`'s admission section (issue 15): the scheduling overhead and the overload
    scenario, printed and added to the results file under "admission"."""
    print("\nAdmission and scheduling (issue 15 targets):", flush=True)
    figures = [admission.run(quick, loop) for loop in ("asyncio", "uvloop")]
    for found in figures:
        print("\n".join("  " + line for line in found.lines()), flush=True)
    overload = run(seconds=5.0 if quick else 12.0)
    print("\n".join("  " + line for line in overload.lines()), flush=True)
    document = json.loads(json_path.read_text()) if json_path.exists() else {}
    document["admission"] = {
        "scheduling": [found.to_json() for found in figures],
        "overload": overload.to_json(),
    }
    json_path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"added the admission section to {json_path}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.overload", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--rate", type=float, default=40.0)
    args = parser.parse_args()
    print("\n".join(run(args.seconds, args.rate).lines()))


if __name__ == "__main__":
    main()
