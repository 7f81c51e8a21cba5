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
        self._verdicts: dict[str, tuple[str, bool] | None] = {}

    def _lookup(self, host: str) -> tuple[str, bool] | None:
        """The address in its canonical text and whether it is a trusted proxy; None if not an address."""
        if host in self._verdicts:
            return self._verdicts[host]
        if len(self._verdicts) >= _MAX_REMEMBERED:
            self._verdicts.clear()
        verdict = self._verdicts[host] = self._match(host)
        return verdict

    def _match(self, host: str) -> tuple[str, bool] | None:
        # A zone id ("fe80::1%eth0") is free text that ipaddress accepts: no address we log carries one.
        if "%" in host:
            return None
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return None
        return str(address), any(address in network for network in self._trusted)

    def apply(self, scope: Scope) -> None:
        """Sets `client` (and `scheme`) from X-Forwarded-For/-Proto when the peer is a trusted proxy."""
        client = scope.get("client")
        if self._trusted and client and (peer := self._lookup(client[0])) is not None and peer[1]:
            self._rewrite(scope, peer[0])

    def _rewrite(self, scope: Scope, peer: str) -> None:
        forwarded = proto = None
        for name, value in scope["headers"]:
            if name == b"x-forwarded-for":
                forwarded = value.decode("latin-1")
            elif name == b"x-forwarded-proto":
                proto = value.decode("latin-1").strip().lower()
        if forwarded:
            scope["client"] = (self._client_of(forwarded, peer), 0)
        if proto in ("http", "https"):
            scope["scheme"] = proto

    def _client_of(self, forwarded: str, peer: str) -> str:
        """Walk from the nearest hop back, skipping our own proxies: the first other address is the client.

        Only addresses count: a hop that is not one ("not-an-ip-7", sent by a client through a proxy that
        passes the header on) ends the walk at the nearest address vouched for, which goes into rate
        limits, logs and the audit trail instead of the client's text.
        """
        client = peer
        for part in reversed(forwarded.split(",")):
            if not (hop := part.strip()):
                continue
            found = self._lookup(hop)
            if found is None:
                break
            client, trusted = found
            if not trusted:
                break
        return client
