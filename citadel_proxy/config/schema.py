"""The shape of `conf/citadel.yaml`: the specification's production.yaml sections, typed and strict.

Keys the specification already uses keep their names (`timeout`, `pool_size`); keys new to us carry
their unit (`connect_timeout_s`, `max_body_bytes`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta

from citadel_proxy.auth.config import AuthConfig
from citadel_proxy.management.names import is_valid_host

Port = Annotated[int, Meta(ge=1, le=65535)]
PositiveInt = Annotated[int, Meta(ge=1)]
Seconds = Annotated[float, Meta(gt=0)]


class Section(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


class Project(Section, frozen=True):
    """Who this gateway is: every JSON log line carries name and environment, and `citadel_build_info`
    carries all three, so lines and series from several gateways can be told apart."""

    name: str = "citadel-proxy"
    environment: str = "production"
    version: str = ""
    # The specification's place for the log level; monitoring.logging.level is the other. Either may be
    # set; both only if they agree.
    log_level: LogLevel | None = None
    # true: DEBUG logging. Never changes what clients see (no tracebacks in answers, ever).
    debug: bool = False


class Database(Section, frozen=True):
    host: str = "127.0.0.1"
    port: Port = 5432
    database: str = "citadel"
    user: str = "citadel"
    password: str | None = None
    pool_size: PositiveInt = 10
    max_overflow: Annotated[int, Meta(ge=0)] = 0
    pool_timeout: Seconds = 30.0
    pool_recycle: Seconds = 3600.0
    ssl_mode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] = "prefer"
    db_schema: str = msgspec.field(default="public", name="schema")
    migrate_on_start: bool = True

    def conninfo(self) -> str:
        from psycopg.conninfo import make_conninfo

        return make_conninfo(
            host=self.host,
            port=self.port,
            dbname=self.database,
            user=self.user,
            password=self.password,
            sslmode=self.ssl_mode,
            options=f"-c search_path={self.db_schema}",
        )


class Redis(Section, frozen=True):
    host: str = "127.0.0.1"
    port: Port = 6379
    database: Annotated[int, Meta(ge=0)] = 0
    max_connections: PositiveInt = 50
    socket_timeout: Seconds = 5.0
    socket_connect_timeout: Seconds = 5.0
    password: str | None = None
    key_prefix: str = "citadel:"


class OllamaService(Section, frozen=True):
    host: str = "127.0.0.1"
    port: Port = 11434
    scheme: Literal["http", "https"] = "http"
    # The specification's `timeout`: the longest Ollama may stay silent (a cold model load can take minutes).
    timeout: Seconds = 3600.0
    connect_timeout_s: Seconds = 5.0
    max_retries: Annotated[int, Meta(ge=0, le=10)] = 3
    max_connections: PositiveInt = 256
    # The most bytes read of a whole (non-streamed) answer, and of one line of a streamed one: past them
    # the request fails with 502 upstream_too_large instead of the worker holding what Ollama sends.
    max_answer_bytes: Annotated[int, Meta(ge=1024)] = 32 * 1024 * 1024
    max_line_bytes: Annotated[int, Meta(ge=1024)] = 4 * 1024 * 1024

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


class ModelEntry(Section, frozen=True):
    name: Annotated[str, Meta(min_length=1)]
    quantization: str = ""
    description: str = ""
    active: bool = True
    # Runtime defaults for this model on every route, under what a request sets: Ollama's context size
    # (its own default, 2048 or 4096 tokens, cuts long prompts silently), how long it stays loaded, and
    # any other Ollama option (top_k, num_gpu, …).
    num_ctx: Annotated[int, Meta(ge=1)] | None = None
    keep_alive: int | float | str | None = None
    options: dict[str, Any] | None = None
    # Load the model into Ollama when the gateway starts (with its num_ctx and keep_alive), so that the
    # first request does not wait for the load.
    preload: bool = False


class Backend(Section, frozen=True):
    """One Ollama server of the fleet."""

    name: Annotated[str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")]
    url: str
    # What this server runs at once (OLLAMA_NUM_PARALLEL x loaded models); never exceeded.
    max_concurrent: PositiveInt = 4
    weight: PositiveInt = 1
    # Only these models are sent here; empty: whatever it has installed.
    models: list[str] = msgspec.field(default_factory=list)

    def __post_init__(self) -> None:
        address(self.url)


def address(url: str) -> tuple[Literal["http", "https"], str, int]:
    """A backend URL's scheme, host and port (the scheme's port when none is given)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError(f"url: {url!r} is not a URL") from None
    scheme = parts.scheme
    if scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"url: {url!r} is not an http:// or https:// URL with a host")
    if parts.path.strip("/") or parts.query or parts.fragment or parts.username:
        raise ValueError(f"url: {url!r} must name only a server (scheme, host, port)")
    default_port = 80 if scheme == "http" else 443
    return ("http" if scheme == "http" else "https"), parts.hostname, port or default_port


class FleetOptions(Section, frozen=True):
    # Backends one request may try before it fails (only while nothing reached the client).
    max_attempts: Annotated[int, Meta(ge=1, le=10)] = 3
    # Each backend's installed (/api/tags) and loaded (/api/ps) models are read this often; it is also
    # the active health probe.
    inventory_interval_s: Seconds = 10.0
    # Failures in a row (connect errors, 5xx, timeouts) that open a backend's breaker, and how long it
    # stays open before one trial request may go through.
    breaker_failures: PositiveInt = 3
    breaker_cooldown_s: Seconds = 10.0
    # Retry-After sent with a 503 when no backend could take the request.
    retry_after_s: PositiveInt = 2
    # An in-flight lease in Redis lives this long unless renewed: a gateway that dies frees its slots.
    lease_ttl_s: Annotated[float, Meta(ge=3)] = 30.0
    # X-Citadel-Backend on responses: the backend that answered.
    backend_header: bool = True
    # Queue aging (README "Admission and priorities"): each priority step is worth this much waiting, so
    # a request is passed by a higher class only if that one arrived less than (difference) * aging_s later.
    aging_s: Annotated[float, Meta(gt=0)] = 2.0
    # Requests one key may have in flight in a worker (queued ones included); 0: no limit. Past it: 429.
    max_in_flight_per_key: Annotated[int, Meta(ge=0)] = 0


class Ollama(Section, frozen=True):
    service: OllamaService = msgspec.field(default_factory=OllamaService)
    models: list[ModelEntry] = msgspec.field(default_factory=list)
    # Registry hosts (`host` or `host:port`) model management may name besides registry.ollama.ai:
    # a host in a model name makes Ollama connect to it.
    registries: list[str] = msgspec.field(default_factory=list)
    # Several Ollama servers (README "Several Ollama servers"); empty: `service` is the one backend.
    backends: list[Backend] = msgspec.field(default_factory=list)
    # Models loaded at start and kept loaded (keep_alive -1) on every backend that has them.
    keep_warm: list[str] = msgspec.field(default_factory=list)
    fleet: FleetOptions = msgspec.field(default_factory=lambda: FleetOptions())

    def __post_init__(self) -> None:
        for host in self.registries:
            if not is_valid_host(host):
                raise ValueError(f"registries: {host!r} is not a registry host (host or host:port)")
        names = [backend.name for backend in self.backends]
        if duplicate := next((name for name in names if names.count(name) > 1), None):
            raise ValueError(f"backends: the name {duplicate!r} is used twice")
        default = OllamaService()
        address = (self.service.host, self.service.port, self.service.scheme)
        if self.backends and address != (default.host, default.port, default.scheme):
            raise ValueError(
                "give either service (one Ollama) or backends (several), not both: "
                "service may keep its timeouts and limits, which every backend uses"
            )


# The gateway's own response headers: the conversation to continue, the id to quote in a report, and
# OpenAI's rate-limit headers, so a browser client can pace itself as the SDKs do.
EXPOSED_HEADERS = (
    "X-Conversation-ID",
    "X-Request-ID",
    "X-Cache",
    "Retry-After",
    *(
        f"x-ratelimit-{what}-{kind}"
        for kind in ("requests", "tokens")
        for what in ("limit", "remaining", "reset")
    ),
)


class Cors(Section, frozen=True):
    enabled: bool = False
    origins: list[str] = msgspec.field(default_factory=list)
    methods: list[str] = msgspec.field(default_factory=lambda: ["GET", "POST", "OPTIONS"])
    headers: list[str] = msgspec.field(default_factory=lambda: ["*"])
    allow_credentials: bool = False
    # Response headers a page's JavaScript may read (browsers hide all but a safe few otherwise).
    expose_headers: list[str] = msgspec.field(default_factory=lambda: list(EXPOSED_HEADERS))

    def __post_init__(self) -> None:
        if self.allow_credentials and "*" in self.origins:
            raise ValueError(
                "allow_credentials with origin '*' lets any site act with the user's credentials; "
                "list the allowed origins instead"
            )


class Gateway(Section, frozen=True):
    # Loopback: nginx in front terminates TLS and keeps /management/ and /metrics internal (README,
    # Deployment); binding a public address lets clients skip both.
    host: str = "127.0.0.1"
    port: Port = 8002
    workers: Annotated[int, Meta(ge=1, le=64)] = 1
    # The specification's `timeout`: the deadline of a pipeline that sets none of its own.
    timeout: Seconds = 3600.0
    cors: Cors = msgspec.field(default_factory=Cors)
    max_body_bytes: PositiveInt = 16 * 1024 * 1024
    # SSE comment sent this often while Ollama has not answered yet (model loading), so proxies stay open.
    keepalive_s: Seconds = 5.0
    # A stream's headers wait this long for Ollama's first answer, so a fast error keeps its HTTP status.
    header_grace_ms: Annotated[int, Meta(ge=0, le=10_000)] = 1000
    # uvicorn (httptools) measured 30-50% less CPU per request and per streamed event than hypercorn
    # on this path, with less memory per open stream (README, Performance); hypercorn stays available.
    server: Literal["hypercorn", "uvicorn"] = "uvicorn"
    # Peers allowed to name the client in X-Forwarded-For (the nginx in front); addresses or networks.
    trusted_proxies: list[str] = msgspec.field(default_factory=lambda: ["127.0.0.1", "::1"])
    # The request line and headers together; past it 431, before the rest of them is read (the
    # servers' own defaults let an 8 MiB header through). nginx in front allows 4 x 8 KiB by default.
    max_header_bytes: Annotated[int, Meta(ge=1024)] = 64 * 1024
    # Header lines in one request; past it 431.
    max_headers: Annotated[int, Meta(ge=1, le=10_000)] = 100
    # From a connection's start, or a keep-alive request's first byte, until its headers are in; then
    # 408 and the connection is closed (slow clients cannot hold connections open a byte at a time).
    header_timeout_s: Seconds = 10.0
    # An idle keep-alive connection is closed after this; above nginx's upstream keepalive_timeout (60 s),
    # so nginx never sends a request on a connection the gateway is closing.
    keep_alive_timeout_s: Annotated[int, Meta(ge=1)] = 75
    # A write to a client blocked this long (the client stopped reading) ends the stream and drops the
    # client's connection; the upstream request is closed with it.
    write_timeout_s: Seconds = 30.0
    # Free-form JSON in a request (tool parameters, schemas, tool-call arguments, embeddings options) may
    # nest this deep; deeper is a 400. msgspec itself refuses what Python's recursion limit cannot hold.
    max_json_depth: Annotated[int, Meta(ge=8, le=512)] = 100
    max_messages: PositiveInt = 4096
    # The largest max_tokens (max_completion_tokens) a request may ask of Ollama (num_predict).
    max_output_tokens: PositiveInt = 131_072

    def __post_init__(self) -> None:
        _check_networks("trusted_proxies", self.trusted_proxies)


class Paths(Section, frozen=True):
    pipelines: str = "../pipelines"
    data: str = "../var/data"
    logs: str = "../var/log"
    backups: str = "../var/backups"


def _check_networks(key: str, entries: list[str]) -> None:
    import ipaddress

    for entry in entries:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ValueError(f"{key}: {entry!r} is not an address or network") from None


class Prometheus(Section, frozen=True):
    # false: no /metrics route at all (404).
    enabled: bool = True
    # null: /metrics on the gateway's own port. A port: /metrics on a listener of its own there (bound to
    # `host`), and not on the gateway's port; the same `allow` and keys guard it.
    port: Port | None = None
    # Clients (the address after gateway.trusted_proxies) that read /metrics without a key.
    allow: list[str] = msgspec.field(default_factory=lambda: ["127.0.0.1", "::1"])
    # Anyone else with a key holding the `metrics` or `admin` scope; false: the networks above only.
    allow_keys: bool = True
    host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        _check_networks("allow", self.allow)


class HealthChecks(Section, frozen=True):
    enabled: bool = True
    interval: Seconds = 30.0
    # A probe of Ollama that has no answer by then counts as down (it never runs longer than interval).
    timeout_s: Seconds = 5.0
    # /health reuses its probes of Ollama, PostgreSQL and Redis for this long (and calls that come while
    # they run wait for them): a public route must not open a connection to each backend per call.
    max_age_s: Seconds = 1.0


class Logging(Section, frozen=True):
    # None: project.log_level, else INFO (Config.resolved fills it in).
    level: LogLevel | None = None
    format: Literal["json", "text"] = "json"
    file: str | None = None
    # Rotation of `file`; refused without a file, where they would do nothing. Defaults: 100MB, 10.
    max_size: str | None = None
    backup_count: Annotated[int, Meta(ge=0)] | None = None

    def __post_init__(self) -> None:
        if self.file is None and (self.max_size is not None or self.backup_count is not None):
            raise ValueError("max_size and backup_count rotate a log file; set file, or remove them")
        if self.max_size is not None:
            from citadel_proxy.observability.logs import parse_size

            parse_size(self.max_size)

    @property
    def rotate_bytes(self) -> str:
        return self.max_size if self.max_size is not None else "100MB"

    @property
    def rotated_files(self) -> int:
        return self.backup_count if self.backup_count is not None else 10


# The `audit` section: how the writer batches, and how durable a record is on return.
class AuditOptions(Section, frozen=True):
    """Tuning of the writer and the spool; the defaults suit one gateway process."""

    # queue: a record waits in memory for its batch (fast; a SIGKILL loses the records of that moment).
    # spool: every record is fsync'd to the spool before its response completes, then moved to
    # PostgreSQL from there: nothing is lost even to SIGKILL, at the cost of one grouped fsync per burst.
    durability: Literal["queue", "spool"] = "queue"
    queue_size: PositiveInt = 10_000
    batch_size: Annotated[int, Meta(ge=1, le=10_000)] = 500
    # The spool starts a new file past this size.
    segment_bytes: Annotated[int, Meta(ge=1024)] = 64 * 1024 * 1024
    retry_s: Seconds = 2.0
    write_timeout_s: Seconds = 10.0
    # How long the writer waits for more records before a batch that is not full (never the response).
    # Short: PostgreSQL then writes small batches often rather than large ones in bursts, which on a
    # server it shares with the gateway showed in the requests' tail (README, Performance).
    linger_s: Annotated[float, Meta(ge=0, le=1)] = 0.01
    # Default: <paths.data>/audit
    spool_dir: str | None = None
    # Requests refused before their pipeline (bad key, bad body, unknown model...) are audited as one
    # record per client, reason, route and key per interval; repeats of their log line are summarised
    # once per interval too. A flood therefore costs the writer a few rows per interval, not one a request.
    refusal_interval_s: Annotated[float, Meta(ge=0.05, le=3600)] = 10.0
    # Groups per interval per worker; refusals past them share one group per reason (client and route "*").
    refusal_max_groups: Annotated[int, Meta(ge=1, le=1_000_000)] = 1000
    # The embedded store, used when `database` is null. Default: <paths.data>/audit.sqlite3; a relative
    # path is taken from paths.data.
    sqlite_path: str | None = None
    # One record's bounds: a turn (and the request's message list) longer than max_record_messages keeps
    # its head and tail; a record over max_record_bytes has its documents and contents shortened. What
    # was left out is noted in the record's `truncation`.
    max_record_messages: PositiveInt = 1000
    max_record_bytes: Annotated[int, Meta(ge=4096)] = 8 * 1024 * 1024
    # A batch is cut at this many bytes of records (a larger record is a batch of its own).
    max_batch_bytes: Annotated[int, Meta(ge=1024)] = 16 * 1024 * 1024
    # A record whose write failed this many times while PostgreSQL took others goes to dead-letter.jsonl.
    max_attempts: Annotated[int, Meta(ge=1, le=100)] = 3
    # How long a request naming a conversation (X-Conversation-ID) waits for PostgreSQL to say whose it
    # is; past it, or while PostgreSQL is down, the request goes on and the insert keeps the records apart.
    conversation_claim_timeout_s: Seconds = 1.0


class Tracing(Section, frozen=True):
    """OpenTelemetry traces of the inference requests, sent over OTLP (observability/tracing.py)."""

    enabled: bool = False
    # The collector; none: http://127.0.0.1:4318/v1/traces (http/protobuf) or http://127.0.0.1:4317
    # (grpc). An http/protobuf URL without a path gets /v1/traces.
    endpoint: str | None = None
    protocol: Literal["http/protobuf", "grpc"] = "http/protobuf"
    # Share of the requests traced; a client's traceparent decides for its own requests.
    sample_ratio: Annotated[float, Meta(ge=0, le=1)] = 1.0
    # true: prompts and answers are recorded on the spans (gen_ai.input.messages, gen_ai.output.messages).
    capture_content: bool = False

    def __post_init__(self) -> None:
        if self.endpoint is not None:
            parts = urlsplit(self.endpoint)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"endpoint: {self.endpoint!r} is not an http:// or https:// URL")


class Monitoring(Section, frozen=True):
    prometheus: Prometheus = msgspec.field(default_factory=Prometheus)
    health_checks: HealthChecks = msgspec.field(default_factory=HealthChecks)
    logging: Logging = msgspec.field(default_factory=Logging)
    tracing: Tracing = msgspec.field(default_factory=Tracing)


class ModelRouting(Section, frozen=True):
    aliases: dict[str, str] = msgspec.field(default_factory=dict)
    valid_models: list[str] = msgspec.field(default_factory=list)


# The `console` section: the operator's console in the browser (/console/, citadel_proxy/console).
class ConsoleOptions(Section, frozen=True):
    enabled: bool = True
    # A session cookie lasts this long after sign-in; then the operator signs in again.
    session_ttl_s: Annotated[int, Meta(ge=60, le=7 * 24 * 3600)] = 8 * 3600
    # How often the Overview's server-sent events carry a new snapshot.
    overview_interval_s: Annotated[float, Meta(ge=0.2, le=60)] = 2.0


class Config(Section, frozen=True):
    project: Project = msgspec.field(default_factory=Project)
    database: Database | None = None
    redis: Redis | None = None
    ollama: Ollama = msgspec.field(default_factory=Ollama)
    gateway: Gateway = msgspec.field(default_factory=Gateway)
    paths: Paths = msgspec.field(default_factory=Paths)
    monitoring: Monitoring = msgspec.field(default_factory=Monitoring)
    model_routing: ModelRouting = msgspec.field(default_factory=ModelRouting)
    auth: AuthConfig = msgspec.field(default_factory=AuthConfig)
    audit: AuditOptions = msgspec.field(default_factory=AuditOptions)
    console: ConsoleOptions = msgspec.field(default_factory=ConsoleOptions)

    def __post_init__(self) -> None:
        wanted = self.monitoring.logging.level
        if self.project.log_level is not None and wanted is not None and self.project.log_level != wanted:
            raise ValueError(
                f"project.log_level ({self.project.log_level}) and monitoring.logging.level ({wanted}) "
                "disagree; set the level in one place"
            )

    @property
    def log_level(self) -> LogLevel:
        if self.project.debug:
            return "DEBUG"
        return self.monitoring.logging.level or self.project.log_level or "INFO"

    def resolved(self, base: Path) -> Config:
        """Relative paths are taken from the config file's folder, whatever the working directory."""

        def absolute(value: str) -> str:
            return str((base / value).resolve()) if not Path(value).is_absolute() else value

        paths = msgspec.structs.replace(
            self.paths,
            pipelines=absolute(self.paths.pipelines),
            data=absolute(self.paths.data),
            logs=absolute(self.paths.logs),
            backups=absolute(self.paths.backups),
        )
        return msgspec.structs.replace(self, paths=paths)
