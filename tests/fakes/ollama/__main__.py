"""The standalone fake for gateways run as a subprocess: `python -m tests.fakes.ollama --port 0 ...`."""

from __future__ import annotations

import argparse
import asyncio
import signal

from . import __doc__ as package_doc
from .behavior import DEFAULT_TOKENS, Behavior, counted_tokens
from .server import FakeOllama


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fakes.ollama", description=package_doc.splitlines()[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (the URL is printed)")
    parser.add_argument("--tokens", type=int, default=None, help='N tokens "w0 ", "w1 ", ... (default 4)')
    parser.add_argument("--token-delay-ms", type=float, default=0.0)
    parser.add_argument("--first-token-delay-ms", type=float, default=0.0)
    parser.add_argument("--error-after", type=int, default=None)
    parser.add_argument("--close-after", type=int, default=None)
    parser.add_argument("--done-reason", default="stop")
    parser.add_argument("--embed-delay-ms", type=float, default=0.0)
    parser.add_argument("--models", default=None, help="comma-separated names (default: the built-in set)")
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    tokens = counted_tokens(args.tokens) if args.tokens is not None else list(DEFAULT_TOKENS)
    behavior = Behavior(
        tokens=tokens,
        token_delay_s=args.token_delay_ms / 1000,
        first_token_delay_s=args.first_token_delay_ms / 1000,
        error_after=args.error_after,
        close_after=args.close_after,
        done_reason=args.done_reason,
    )
    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    async with FakeOllama(
        models, behavior=behavior, host=args.host, port=args.port, embed_delay_s=args.embed_delay_ms / 1000
    ) as fake:
        print(fake.url, flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    asyncio.run(_serve(_parse_args(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
