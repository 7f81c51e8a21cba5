"""The audit record of one exchange, and how it is built from a finished pipeline context."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from hashlib import sha256
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from citadel_proxy.audit.content import ContentPolicy
from citadel_proxy.entropy import random_bytes
from citadel_proxy.errors import GatewayError
from citadel_proxy.pipeline.types import CLIENT_CLOSED_STATUS, Completion, Delta, ToolCall

if TYPE_CHECKING:
    from citadel_proxy.pipeline.request import InferenceRequest
    from citadel_proxy.pipeline.types import Context

T = TypeVar("T")


class AuditMessage(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    role: str
    content: str | None = None
    sha256: str | None = None
    bytes: int = 0
    truncated: bool = False


class Truncation(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What a record left out to stay within `audit.max_record_messages` and `max_record_bytes`."""

    messages_omitted: int = 0  # from the middle of the new turn (its head and tail are kept)
    request_messages_omitted: int = 0  # from the middle of the request document's messages
    record_bytes: int = 0  # the record's size before its contents were shortened (0: they were not)


class AuditRecord(msgspec.Struct, frozen=True):
    """One API call. `id` is minted when the request starts, so storing it twice stores it once.

    Not kw_only: `build_record` makes one per request with every field given by position, which msgspec
    matches at once, where two dozen keywords are each looked up among the fields. Elsewhere keywords
    are used as before; new fields go at the end, with a default.
    """

    id: str
    time: datetime
    route: str
    pipeline: str
    stream: bool
    model_requested: str
    model: str
    key_name: str | None = None
    client: str | None = None
    conversation_id: str | None = None
    status: int = 200
    error_code: str | None = None
    ttft_ms: float | None = None
    duration_ms: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cache_hit: bool = False
    content_mode: str = "full"
    # The request as the pipeline carried it (pipeline/request.py), content fields as the mode keeps them.
    # Built from a request: its JSON as encoded once (Raw), unless the mode or its size changed it.
    request: dict[str, Any] | msgspec.Raw = msgspec.field(default_factory=dict)
    response: dict[str, Any] | None = None
    # The new turn: the request's messages after its last assistant message, then the answer.
    messages: list[AuditMessage] = msgspec.field(default_factory=list)
    truncation: Truncation | None = None
    # The backend that answered, and every one tried in order (a failover tries more than one).
    backend: str | None = None
    attempts: list[str] = msgspec.field(default_factory=list)


def head_and_tail(items: list[T], limit: int) -> tuple[list[T], int]:
    """At most `limit` items, the middle ones left out (a turn's start and its latest both matter)."""
    if len(items) <= limit:
        return items, 0
    head = (limit + 1) // 2
    return items[:head] + items[len(items) - (limit - head) :], len(items) - limit


# The hex digit of the variant (0b10) and two random bits, by the random hex digit they are taken from.
_VARIANT_DIGIT = {digit: "89ab"[i % 4] for i, digit in enumerate("0123456789abcdef")}
_MILLISECONDS_48 = (1 << 48) - 1


def new_id() -> str:
    """A UUIDv7 (RFC 9562): time-ordered, so ids sort roughly by request start."""
    stamp = (time.time_ns() // 1_000_000 & _MILLISECONDS_48).to_bytes(6, "big")
    h = (stamp + random_bytes(10)).hex()
    # What str(uuid.UUID(...)) gives, without building the UUID or editing bytes: the version digit (7)
    # in place of a random one, the variant's digit made from another.
    return f"{h[:8]}-{h[8:12]}-7{h[13:16]}-{_VARIANT_DIGIT[h[16]]}{h[17:20]}-{h[20:]}"


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


def encode_record(record: AuditRecord) -> bytes:
    """The record's JSON: what the queue, the spool and a batch carry once the record is built.

    Encoded at once, so a record waiting for its batch is one compact bytes object rather than the
    dicts and strings it was built from, and no step after this one encodes it again.
    """
    return _encode(record)


class _Id(msgspec.Struct):
    id: str


_decode_id = msgspec.json.Decoder(_Id).decode


def record_id(encoded: bytes) -> str:
    """The id of an encoded record, for a log line (the rest is not decoded)."""
    try:
        return _decode_id(encoded).id
    except msgspec.DecodeError:
        return "(unreadable)"


def plain(value: Any) -> Any:
    """JSON-ready builtins of a wire struct, as the client sent them.

    The wire structs omit their unset (default) fields; what a client put inside free-form JSON (a tool's
    parameters schema, a response format) is kept exactly, nulls included. One encode and one decode,
    both in C: a third of what walking the builtins in Python cost.
    """
    return _decode(_encode(value))


# An open stream holds its answer so far, a token a piece: a str of a few characters costs about 50 bytes
# beside them, so every this many loose pieces are joined, into the piece before them while that one is
# short (a short answer is held as one str), else into a piece of their own (a long one is not copied
# whole again and again).
_FOLD_PIECES = 8
_PIECE_CHARS = 4096


def _fold(pieces: list[str], start: int) -> int:
    """Join pieces[start:] (the loose ones); returns the length at which to fold again."""
    loose = "".join(pieces[start:])
    if start and len(pieces[start - 1]) < _PIECE_CHARS:
        pieces[start - 1 :] = [pieces[start - 1] + loose]
        return start + _FOLD_PIECES
    pieces[start:] = [loose]
    return start + 1 + _FOLD_PIECES


@dataclass(slots=True)
class Answer:
    """What came back, assembled from a stream's deltas or taken from a whole completion."""

    content: list[str] = field(default_factory=list)
    # None until the answer has some: most have neither, and an open stream holds its answer.
    thinking: list[str] | None = None
    tool_calls: list[ToolCall] | None = None
    finish_reason: str | None = None
    # How many pieces `content` and `thinking` may hold before their loose pieces are joined (_fold).
    content_fold_at: int = _FOLD_PIECES
    thinking_fold_at: int = _FOLD_PIECES

    def add(self, deltas: list[Delta]) -> None:
        content = self.content
        for delta in deltas:
            if delta.content:
                content.append(delta.content)
            if delta.thinking:
                thinking = self.thinking
                if thinking is None:
                    thinking = self.thinking = []
                thinking.append(delta.thinking)
                if len(thinking) > self.thinking_fold_at:
                    self.thinking_fold_at = _fold(thinking, self.thinking_fold_at - _FOLD_PIECES)
            if delta.tool_calls:
                if self.tool_calls is None:
                    self.tool_calls = []
                self.tool_calls.extend(delta.tool_calls)
        # Once a batch rather than per token: most batches carry content only.
        if len(content) > self.content_fold_at:
            self.content_fold_at = _fold(content, self.content_fold_at - _FOLD_PIECES)

    @classmethod
    def of(cls, completion: Completion) -> Answer:
        return cls(
            [completion.content], [completion.thinking], list(completion.tool_calls), completion.finish_reason
        )


@dataclass(frozen=True, slots=True)
class Failure:
    status: int
    code: str | None
    message: str

    @classmethod
    def of(cls, exc: Exception) -> Failure:
        """An error answer as recorded: a gateway error as sent, anything else as an internal error."""
        if isinstance(exc, GatewayError):
            return cls(exc.status, exc.code, exc.message)
        return cls(500, "internal_error", type(exc).__name__)

    @classmethod
    def client_closed(cls, message: str) -> Failure:
        return cls(CLIENT_CLOSED_STATUS, "client_closed", message)


def build_record(
    ctx: Context,
    *,
    record_id: str,
    started_at: datetime,
    policy: ContentPolicy,
    answer: Answer | None,
    failure: Failure | None = None,
    max_messages: int = 1000,
) -> AuditRecord:
    outcome = ctx.outcome
    now = time.perf_counter()
    first, finished = outcome.first_token_at, outcome.finished_at or now
    request = ctx.request
    messages = request.messages
    turn_given: list[dict[str, Any]] | None = None
    truncation: Truncation | None = None
    if messages is not None and len(messages) > max_messages:
        request, turn_given, truncation = _bounded(request, messages, max_messages)
    turn = (
        _new_turn(request)
        if turn_given is None
        else [(str(m.get("role")), _text_of(m.get("content")) or "") for m in turn_given]
    )
    if len(turn) > max_messages:  # a completions prompt list
        turn, omitted = head_and_tail(turn, max_messages)
        truncation = Truncation(messages_omitted=omitted)
    response, answered = _answered(answer, outcome.finish_reason, failure, policy)
    if outcome.context_truncated:  # Ollama cut the prompt: a record to look for afterwards
        response = {**(response or {}), "context_truncated": True}
    # By position, in the order of the fields (see AuditRecord).
    return AuditRecord(
        record_id,  # id
        started_at,  # time
        ctx.route,
        ctx.pipeline.name,
        ctx.stream,
        ctx.model_requested,
        ctx.model,
        ctx.principal.name if ctx.principal is not None else None,  # key_name
        ctx.client or None,  # client
        ctx.conversation_id,
        failure.status if failure else outcome.status,  # status
        failure.code if failure else outcome.error_code,  # error_code
        (first - ctx.started) * 1000 if first is not None else None,  # ttft_ms
        max(finished - ctx.started, 0.0) * 1000,  # duration_ms
        outcome.prompt_tokens,
        outcome.completion_tokens,
        outcome.cache_hit,
        policy.mode,  # content_mode
        _request_field(request, policy),  # request
        response,
        [_message(role, text, policy) for role, text in turn] + answered,  # messages
        truncation,
        ctx.backend,
        list(ctx.attempts),  # attempts
    )


def _request_field(request: Any, policy: ContentPolicy) -> dict[str, Any] | msgspec.Raw:
    """The request document: the request's JSON itself when the mode keeps it whole and it fits (every
    field is shorter than the whole body), else its builtins with content fields as the mode keeps them.

    Kept as the JSON it was encoded to: the record's own encoding copies it, where builtins would be
    decoded here and encoded again.
    """
    encoded = _encode(request)
    if policy.mode == "full" and len(encoded) <= policy.max_bytes:
        return msgspec.Raw(encoded)
    body = _decode(encoded)
    # Let go of the JSON before the builtins are summarised: a large request's record held one more
    # copy of its body at its peak.
    del encoded
    return _request_document(body, policy)


def _bounded(
    body: InferenceRequest, messages: list[Any], limit: int
) -> tuple[InferenceRequest, list[dict[str, Any]], Truncation]:
    """A request with more than `limit` messages cut to `limit`, and its new turn likewise.

    Cut while still a struct: decoding a million messages only to drop them cost seconds of the loop.
    """
    last = max((i for i, m in enumerate(messages) if getattr(m, "role", None) == "assistant"), default=-1)
    turn, turn_omitted = head_and_tail(messages[last + 1 :], limit)
    kept, omitted = head_and_tail(messages, limit)
    truncation = Truncation(messages_omitted=turn_omitted, request_messages_omitted=omitted)
    return msgspec.structs.replace(body, messages=kept), _decode(_encode(turn)), truncation


_CONTENT_FIELDS = ("content", "tool_calls", "thinking", "images")


def _request_document(body: dict[str, Any], policy: ContentPolicy) -> dict[str, Any]:
    document = dict(body)
    if isinstance(body.get("messages"), list):
        document["messages"] = [
            {k: policy.document(v) if k in _CONTENT_FIELDS else v for k, v in message.items()}
            for message in body["messages"]
        ]
    for key in ("prompt", "suffix", "system", "images", "input"):
        if key in document:
            document[key] = policy.document(document[key])
    return document


def _answered(
    answer: Answer | None, finish_reason: str | None, failure: Failure | None, policy: ContentPolicy
) -> tuple[dict[str, Any] | None, list[AuditMessage]]:
    """The response document and the answer's message (none without an answer).

    The document holds only the keys that have a value, in this order: what a document with its None
    values left out holds. The answer's text is encoded once for both where the mode keeps it whole.
    """
    document: dict[str, Any] = {}
    answered: list[AuditMessage] = []
    if answer is not None:
        text = "".join(answer.content)
        calls = plain(answer.tool_calls) if answer.tool_calls else None
        raw = _whole_utf8(text, policy)
        document["content"] = text if raw is not None else policy.document(text)
        if calls is not None and not text:  # tool calls alone: their JSON is the message
            answered.append(_message("assistant", msgspec.json.encode(calls).decode(), policy))
        else:
            answered.append(_kept("assistant", text, raw, policy))
        if answer.thinking and any(answer.thinking):
            document["thinking"] = policy.document("".join(answer.thinking))
        if calls is not None:
            document["tool_calls"] = policy.document(calls)
        finish = answer.finish_reason or finish_reason
        if finish is not None:
            document["finish_reason"] = finish
    if failure is not None:
        document["error"] = {"code": failure.code, "message": failure.message}
    return document or None, answered


def _text_of(content: Any) -> str | None:
    if content is None or isinstance(content, str):
        return content
    # Multimodal parts: kept as their JSON so nothing is lost.
    return msgspec.json.encode(content).decode()


def _message(role: str, text: str, policy: ContentPolicy) -> AuditMessage:
    return _kept(role, text, _whole_utf8(text, policy), policy)


def _whole_utf8(text: str, policy: ContentPolicy) -> bytes | None:
    """The text's UTF-8 when the mode keeps it whole (full, within its limit), else None."""
    if policy.mode != "full":
        return None
    raw = text.encode("utf-8", "surrogatepass")
    return raw if len(raw) <= policy.max_bytes else None


def _kept(role: str, text: str, whole: bytes | None, policy: ContentPolicy) -> AuditMessage:
    """The message as the mode keeps it; `whole`: its UTF-8 when kept whole (`_whole_utf8`), which is
    `ContentPolicy.keep` in full mode within its limit, without its Kept."""
    if whole is not None:
        return AuditMessage(role=role, content=text, sha256=sha256(whole).hexdigest(), bytes=len(whole))
    kept = policy.keep(text)
    return AuditMessage(
        role=role, content=kept.text, sha256=kept.sha256, bytes=kept.bytes, truncated=kept.truncated
    )


def _new_turn(request: InferenceRequest) -> list[tuple[str, str]]:
    """(role, text) of the new turn's messages (after the last assistant message), or the prompt; they
    are hashed (and kept) as the record's messages."""
    messages = request.messages
    if messages is not None:
        start = len(messages)
        while start and messages[start - 1].role != "assistant":
            start -= 1
        return [(m.role, m.content) for m in messages[start:]]
    return [("user", request.prompt)] if request.prompt else []
