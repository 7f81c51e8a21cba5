"""`citadel-proxy keys create|list|revoke|hash`: API keys from the command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from typing import Any

import msgspec

from citadel_proxy.auth.keys import SCOPES, KeyRecord, Scope, generate_key, hash_key, looks_like_key
from citadel_proxy.auth.store import KeyStore, open_key_store
from citadel_proxy.config import ConfigError, add_config_option, chosen_config, config_path, load_config
from citadel_proxy.errors import GatewayError


def register(subparsers: Any) -> None:
    keys = subparsers.add_parser("keys", help="create, list and revoke API keys")
    add_config_option(keys)
    names = ("create", "list", "revoke", "hash")
    actions = keys.add_subparsers(dest="keys_action", required=True, metavar="{" + ",".join(names) + "}")

    create = actions.add_parser("create", help="create a key and print it (the only time it is shown)")
    create.add_argument("name", help="a name for the key, unique among live keys (e.g. the application)")
    create.add_argument(
        "--scopes", default="inference", type=_scopes, help="comma separated: " + ",".join(SCOPES)
    )
    create.add_argument("--rpm", type=_positive, help="requests per minute")
    create.add_argument("--tpm", type=_positive, help="tokens per minute")
    create.set_defaults(func=run)

    listing = actions.add_parser("list", help="list keys (never the keys themselves)")
    listing.add_argument("--json", action="store_true", help="one JSON document instead of a table")
    listing.set_defaults(func=run)

    revoke = actions.add_parser("revoke", help="revoke the live key of that name; it stops working at once")
    revoke.add_argument("name", help="the key's name, as `keys list` shows it")
    revoke.set_defaults(func=run)

    digest = actions.add_parser(
        "hash", help="print the sha256 of a key read on stdin, for the config's auth.keys"
    )
    digest.add_argument("--new", action="store_true", help="generate a key; print it, then its sha256")
    digest.set_defaults(func=run)
    for action in (create, listing, revoke, digest):
        add_config_option(action)


def run(args: argparse.Namespace) -> int:
    if args.keys_action == "hash":
        return _hash(new=args.new)
    try:
        config = load_config(config_path(chosen_config(args)))
        return asyncio.run(_run(args, config))
    except (ConfigError, GatewayError) as exc:
        sys.stderr.write(f"citadel-proxy keys: {exc}\n")
        return 1


async def _run(args: argparse.Namespace, config: Any) -> int:
    async with contextlib.AsyncExitStack() as stack:
        store = await open_key_store(config, stack, listen_changes=False)
        result = await _act(store, args)
    return result


async def _act(store: KeyStore, args: argparse.Namespace) -> int:
    if args.keys_action == "create":
        return await _create(store, args)
    if args.keys_action == "list":
        return _list(await store.list(), as_json=args.json)
    if await store.revoke(args.name):
        sys.stdout.write(f"revoked {args.name}\n")
        return 0
    sys.stderr.write(f"citadel-proxy keys: no live key named {args.name!r}\n")
    return 1


def _hash(*, new: bool) -> int:
    """Read from stdin rather than argv, so the key stays out of shell history and `ps`."""
    key = generate_key() if new else sys.stdin.readline().strip()
    if not looks_like_key(key):
        sys.stderr.write("citadel-proxy keys: a key looks like cit_<43 characters>; use --new to make one\n")
        return 1
    if new:
        sys.stdout.write(key + "\n")
    sys.stdout.write(hash_key(key).hex() + "\n")
    return 0


async def _create(store: KeyStore, args: argparse.Namespace) -> int:
    new = await store.create(args.name, args.scopes, args.rpm, args.tpm)
    sys.stdout.write(new.key + "\n")
    sys.stderr.write(
        f"created key {args.name!r} ({new.record.prefix}...); store it now, it is not shown again\n"
    )
    return 0


def _list(records: list[KeyRecord], *, as_json: bool) -> int:
    if as_json:
        # The digest is not a secret, but it has no use outside the store: listings leave it out.
        rows = [{k: v for k, v in msgspec.to_builtins(r).items() if k != "sha256"} for r in records]
        sys.stdout.write(msgspec.json.encode(rows).decode() + "\n")
        return 0
    header = ("NAME", "PREFIX", "SCOPES", "RPM", "TPM", "SOURCE", "CREATED", "LAST USED", "STATUS")
    lines = [header, *(_row(r) for r in records)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        sys.stdout.write(
            "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() + "\n"
        )
    return 0


def _row(r: KeyRecord) -> tuple[str, ...]:
    def when(value: Any) -> str:
        return value.strftime("%Y-%m-%d %H:%M") if value else "-"

    status = f"revoked {when(r.revoked_at)}" if r.revoked_at else "live"
    limits = (str(r.requests_per_minute or "-"), str(r.tokens_per_minute or "-"))
    return (
        r.name,
        r.prefix or "-",
        ",".join(r.scopes),
        *limits,
        r.source,
        when(r.created_at),
        when(r.last_used),
        status,
    )


def _scopes(text: str) -> list[Scope]:
    scopes = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise argparse.ArgumentTypeError(f"scopes are a comma separated list of {', '.join(SCOPES)}")
    return scopes  # type: ignore[return-value]  # checked against SCOPES above


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value
