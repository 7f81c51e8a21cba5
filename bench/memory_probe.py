"""Where the memory of held-open streams goes: RSS, Python allocations and objects per stream.

    python -m bench.memory_probe [--streams 500] [--full] [--tracemalloc] [--top 25] [--token-delay-ms 200]

Starts a slow fake Ollama and a one-worker uvicorn gateway (bare pipelines, or the repository's full
pipelines with --full: auth, Redis limits, PostgreSQL audit, metrics), opens N streams, then N more,
and reports the gateway's RSS growth per stream over the second N (the marginal cost, free of the
first requests' one-off allocations), and, read from the gateway through signals, the object counts by
type per stream and (with --tracemalloc, which slows the gateway and adds its own RSS) the Python
allocations per stream by source line. RSS minus traced allocations is what C code holds (uvloop,
httptools, the allocator's slack).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from bench.full import gateway_spec
from bench.procs import (
    REPO,
    GatewaySpec,
    Server,
    free_port,
    gateway_config,
    start_fake,
)

_KIB = 1024
_PATH = "/v1/voice/chat/completions"
_TOKEN = b'"content":"'

# Runs inside the gateway's process before `citadel-proxy serve`: SIGUSR1 writes object counts by type
# (and a tracemalloc snapshot when tracing) to $CITADEL_PROBE_DIR/<n>.*, n counting up from 0.
_CHILD = """
import gc, json, os, signal, sys, tracemalloc
from collections import Counter
folder = os.environ["CITADEL_PROBE_DIR"]
if os.environ.get("CITADEL_PROBE_TRACE"):
    tracemalloc.start(int(os.environ["CITADEL_PROBE_TRACE"]))
dumps = [0]
def dump(signum, frame):
    n = dumps[0]
    dumps[0] += 1
    gc.collect()
    counts = Counter(type(o).__module__ + "." + type(o).__qualname__ for o in gc.get_objects())
    if tracemalloc.is_tracing():
        tracemalloc.take_snapshot().dump(os.path.join(folder, f"{n}.snap"))
    with open(os.path.join(folder, f"{n}.json.tmp"), "w") as out:
        json.dump(counts, out)
    os.rename(os.path.join(folder, f"{n}.json.tmp"), os.path.join(folder, f"{n}.json"))
signal.signal(signal.SIGUSR1, dump)
from citadel_proxy.cli import main
sys.exit(main(sys.argv[1:]))
"""


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.memory_probe", description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=500, help="N: streams opened per step (default 500)")
    parser.add_argument("--full", action="store_true", help="the full pipelines (PostgreSQL and Redis)")
    parser.add_argument("--tracemalloc", type=int, default=0, metavar="FRAMES", help="trace allocations")
    parser.add_argument("--top", type=int, default=25, help="lines of each table (default 25)")
    parser.add_argument("--token-delay-ms", type=float, default=200.0, help="the fake's pause per token")
    parser.add_argument("--server", default="uvicorn", help="uvicorn (default) or hypercorn")
    parser.add_argument("--save", type=Path, help="copy the dumps (counts, snapshots) to this folder")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    with tempfile.TemporaryDirectory(prefix="citadel-probe-") as tmp, contextlib.ExitStack() as stack:
        workdir = Path(tmp)
        fake = start_fake("fake-slow", workdir, 64, args.token_delay_ms)
        stack.callback(fake.stop)
        notes: list[str] = []
        target = gateway_spec(stack, workdir, "probe", full=args.full, notes=notes, server=args.server)
        if target is None:
            print("\n".join(notes), file=sys.stderr)
            return 1
        spec, headers = target
        # Traced, opening the streams takes long enough that voice's 30 s deadline would end the first.
        voice = workdir / spec.pipelines / "voice.yaml"
        voice.write_text(re.sub(r"(?m)^timeout: .*$", "timeout: 3600", voice.read_text()))
        gateway = _start_gateway(workdir, spec, fake.port, args.tracemalloc)
        stack.callback(gateway.stop)
        gateway.wait_ready("/health", timeout_s=90.0)
        asyncio.run(_probe(args, gateway, workdir / "dumps", headers))
        if args.save:
            shutil.copytree(workdir / "dumps", args.save, dirs_exist_ok=True)
    return 0


def _start_gateway(workdir: Path, spec: GatewaySpec, ollama_port: int, frames: int) -> Server:
    port = free_port()
    config = gateway_config(workdir, spec, "probe", ollama_port, 1 << 16)
    dumps = workdir / "dumps"
    dumps.mkdir()
    env = {"CITADEL_PROBE_DIR": str(dumps), "PYTHONPATH": os.environ.get("PYTHONPATH", str(REPO))}
    if frames:
        env["CITADEL_PROBE_TRACE"] = str(frames)
    argv = [sys.executable, "-c", _CHILD, "serve", "--config", str(config), "--bind", f"127.0.0.1:{port}"]
    return Server("probe", [*argv, "--workers", "1"], port, workdir / "probe.log", env=env)


async def _probe(args: argparse.Namespace, gateway: Server, dumps: Path, headers: bytes) -> None:
    n = args.streams
    request = _request(gateway.port, headers)
    held: list[asyncio.StreamWriter] = []
    # Warm up: the first streams build the caches, pools and code paths every later one shares.
    await _open(gateway.port, request, 20, [])
    await asyncio.sleep(0.5)
    rss = [_rss_kib(gateway)]
    counts = [await _dump(gateway, dumps, 0)]
    for step in (1, 2):
        started = time.monotonic()
        await _open(gateway.port, request, n, held)
        await asyncio.sleep(1.0)
        rss.append(_rss_kib(gateway))
        counts.append(await _dump(gateway, dumps, step))
        took = time.monotonic() - started
        print(f"{len(held)} streams open ({took:.1f} s): gateway RSS {rss[-1] / _KIB:.1f} MiB")
    # What an open stream holds per token it was sent (an audited stream's answer so far, say).
    wait_s = 5.0
    await asyncio.sleep(wait_s)
    later = _rss_kib(gateway)
    await _dump(gateway, dumps, 3)
    tokens = len(held) * wait_s / (args.token_delay_ms / 1000)
    print(f"{wait_s:g} s later (about {tokens:.0f} tokens sent): gateway RSS {later / _KIB:.1f} MiB,"
          f" {(later - rss[2]) * _KIB / tokens:.1f} bytes per token")  # fmt: skip
    for writer in held:
        writer.close()
    print(f"\nRSS per stream: first N {(rss[1] - rss[0]) / n:.2f} KiB (includes one-off growth),"
          f" second N {(rss[2] - rss[1]) / n:.2f} KiB")  # fmt: skip
    _print_counts(counts[1], counts[2], n, args.top)
    if args.tracemalloc:
        _print_traces(dumps / "1.snap", dumps / "2.snap", n, args.top, (rss[2] - rss[1]) / n)
        print(f"\nWhile the {len(held)} streams were sent {tokens:.0f} tokens (per 1000 tokens):")
        _print_traces(dumps / "2.snap", dumps / "3.snap", round(tokens / 1000), args.top, 0.0)


def _request(port: int, headers: bytes) -> bytes:
    body = json.dumps(
        {"model": "phi3", "messages": [{"role": "user", "content": "Say something."}], "max_tokens": 100000,
         "stream": True}, separators=(",", ":"),
    ).encode()  # fmt: skip
    head = f"POST {_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
    head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + headers + b"\r\n" + body


async def _open(port: int, request: bytes, count: int, held: list[asyncio.StreamWriter]) -> None:
    """Open `count` streams, 50 at a time, each until its first token arrived."""

    async def one() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        seen = b""
        while _TOKEN not in seen:
            chunk = await reader.read(4096)
            if not chunk:
                raise RuntimeError(f"stream closed before a token: {seen[:300]!r}")
            seen += chunk
        held.append(writer)
        # Keep reading (and dropping) so the gateway's writes never block.
        asyncio.get_running_loop().create_task(_drain(reader))

    for start in range(0, count, 50):
        await asyncio.gather(*(one() for _ in range(min(50, count - start))))


async def _drain(reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(OSError):
        while await reader.read(65536):
            pass


def _rss_kib(gateway: Server) -> float:
    return float(gateway.process.memory_info().rss) / _KIB


async def _dump(gateway: Server, dumps: Path, n: int) -> dict[str, int]:
    os.kill(gateway.popen.pid, signal.SIGUSR1)
    path = dumps / f"{n}.json"
    while not path.exists():  # noqa: ASYNC110 (another process writes it)
        await asyncio.sleep(0.05)
    counts: dict[str, int] = json.loads(path.read_text())
    return counts


def _print_counts(before: dict[str, int], after: dict[str, int], n: int, top: int) -> None:
    growth = sorted(((after.get(k, 0) - before.get(k, 0), k) for k in after), reverse=True)
    total = sum(after.values()) - sum(before.values())
    print(f"\nGC-tracked objects per stream: {total / n:.1f}")
    for count, name in growth[:top]:
        if count > 0:
            print(f"  {count / n:7.2f}  {name}")


def _print_traces(first: Path, second: Path, n: int, top: int, rss_per_stream: float) -> None:
    import tracemalloc

    old, new = tracemalloc.Snapshot.load(str(first)), tracemalloc.Snapshot.load(str(second))
    stats = new.compare_to(old, "lineno")
    traced = sum(s.size_diff for s in stats) / n / _KIB
    print(f"\nPython allocations per stream: {traced:.2f} KiB (tracemalloc; the RSS above is of a traced"
          f" run, {rss_per_stream:.2f} KiB)")  # fmt: skip
    for stat in stats[:top]:
        frame = stat.traceback[0]
        where = f"{Path(frame.filename).name}:{frame.lineno}"
        print(f"  {stat.size_diff / n:8.0f} B  {stat.count_diff / n:6.2f} blocks  {where}")
    if len(new.traces[0].traceback) > 1 if new.traces else False:
        print("\nBy traceback (largest):")
        for stat in new.compare_to(old, "traceback")[:10]:
            print(f"  {stat.size_diff / n:8.0f} B")
            for line in stat.traceback.format()[-12:]:
                print("      " + line)


if __name__ == "__main__":
    sys.exit(main())
