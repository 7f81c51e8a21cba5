"""The real client address behind a trusted reverse proxy (nginx), for rate limits, audit and logs.

Only a peer listed in `gateway.trusted_proxies` may say who the client is: anyone else could otherwise
pick their own address and dodge per-IP limits or forge the audit trail.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from starlette.types import Scope

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def networks(entries: Sequence[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


# Peers remembered per worker: a gateway sees few distinct ones (its proxies; clients, when none).
_MAX_REMEMBERED = 4096


class TrustedProxies:
    def __init__(self, trusted: Sequence[str]) -> None:
        self._trusted = networks(trusted)
        # Parsing an address and matching it against the networks cost ~5 µs per request.
        self._verdicts: dict[str, bool] = {}

    def _is_trusted(self, host: str) -> bool:
        verdict = self._verdicts.get(host)
        if verdict is None:
            if len(self._verdicts) >= _MAX_REMEMBERED:
                self._verdicts.clear()
            verdict = self._verdicts[host] = self._match(host)
        return verdict

    def _match(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self._trusted)

    def apply(self, scope: Scope) -> None:
        """Sets `client` (and `scheme`) from X-Forwarded-For/-Proto when the peer is a trusted proxy."""
        client = scope.get("client")
        if self._trusted and client and self._is_trusted(client[0]):
            self._rewrite(scope, client)

    def _rewrite(self, scope: Scope, client: tuple[str, int]) -> None:
        forwarded = proto = None
        for name, value in scope["headers"]:
            if name == b"x-forwarded-for":
                forwarded = value.decode("latin-1")
            elif name == b"x-forwarded-proto":
                proto = value.decode("latin-1").strip().lower()
        if forwarded:
            # Walk from the nearest hop back, skipping our own proxies: the first other address is the client.
            for hop in reversed([part.strip() for part in forwarded.split(",") if part.strip()]):
                if not self._is_trusted(hop):
                    scope["client"] = (hop, 0)
                    break
            else:
                scope["client"] = (forwarded.split(",")[0].strip(), 0)
        if proto in ("http", "https"):
            scope["scheme"] = proto
