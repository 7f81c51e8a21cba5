"""`citadel-proxy`: serve the gateway, check its configuration, and the operator commands."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from citadel_proxy.config.schema import Config
    from citadel_proxy.pipeline.spec import PipelineSet

# Imports of the application are inside the commands: `serve` must be able to shield itself from
# SIGHUP before the (slow) imports start, and the other commands load only what they use.


def _load(args: argparse.Namespace) -> tuple[Path, Config, PipelineSet] | None:
    """The config and its pipelines, or None after saying what is wrong with them."""
    from citadel_proxy.app import load_pipeline_set
    from citadel_proxy.config import ConfigError, chosen_config, config_path, load_config

    path = config_path(chosen_config(args))
    try:
        config = load_config(path)
        return path, config, load_pipeline_set(config)
    except ConfigError as exc:
        sys.stderr.write(f"citadel-proxy: {exc}\n")
        return None


def _serve(args: argparse.Namespace) -> int:
    from citadel_proxy.server import serve

    loaded = _load(args)
    if loaded is None:
        return 2
    path, config, _ = loaded
    return serve(config, path, args.bind, args.workers)


def _check(args: argparse.Namespace) -> int:
    loaded = _load(args)
    if loaded is None:
        return 1
    path, _, pipelines = loaded
    names = ", ".join(p.name for p in pipelines.all)
    sys.stdout.write(f"{path}: ok; pipelines: {names}\n")
    return 0


def parser() -> argparse.ArgumentParser:
    from citadel_proxy.config.loader import add_config_option

    root = argparse.ArgumentParser(prog="citadel-proxy", description=__doc__)
    add_config_option(root)
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve", help="start the gateway (uvicorn, or hypercorn with gateway.server: hypercorn)"
    )
    add_config_option(serve)
    serve.add_argument("--bind", metavar="HOST:PORT", help="address (default: gateway.host:gateway.port)")
    serve.add_argument("--workers", type=int, metavar="N", help="worker processes (default: gateway.workers)")
    serve.set_defaults(func=_serve)

    check = commands.add_parser("check", help="validate the config and every pipeline file; exit 1 if not")
    add_config_option(check)
    check.set_defaults(func=_check)

    from citadel_proxy.auth import cli as keys_cli

    keys_cli.register(commands)
    from citadel_proxy.audit import cli as audit_cli

    audit_cli.register(commands)
    from citadel_proxy.health import cli as health_cli

    health_cli.register(commands)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    if words[:1] == ["serve"]:
        # systemd's ExecReload may come while we start: until the app installs its reload handler, a
        # SIGHUP must not end the process (its default action).
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    args = parser().parse_args(words)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
