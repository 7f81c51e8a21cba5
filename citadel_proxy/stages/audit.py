"""The `audit` stage: records every exchange (who, what, which model, what came back, how long).

Place it first in a pipeline so it also records requests that later stages refuse (auth, rate limit).
The record is built when the exchange ends: after a whole completion, or when a stream ends, fails, or
is closed early by a client that went away. Writing never makes the request wait for the database.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

from msgspec import Meta

from citadel_proxy.audit.content import ContentMode, ContentPolicy
from citadel_proxy.audit.conversations import normalise
from citadel_proxy.audit.errors import AuditError
from citadel_proxy.audit.records import Answer, AuditRecord, Failure, build_record, new_id
from citadel_proxy.errors import InvalidRequest, PermissionDenied, ServiceUnavailable
from citadel_proxy.pipeline.stage import Handler, StageSettings, StageType
from citadel_proxy.pipeline.taps import tap
from citadel_proxy.pipeline.types import Context, Delta, Reply

if TYPE_CHECKING:
    from citadel_proxy.audit.conversations import Owners
    from citadel_proxy.audit.sink import AuditSink
    from citadel_proxy.services import Services

log = logging.getLogger(__name__)

CONVERSATION_HEADER = "X-Conversation-ID"
_CONVERSATION_NAME = CONVERSATION_HEADER.lower().encode("latin-1")


class AuditSettings(StageSettings, frozen=True, kw_only=True, forbid_unknown_fields=True):
    # full: content kept (up to max_message_bytes per message); hashed: sha256 only; none: metadata only.
    content: ContentMode = "full"
    max_message_bytes: Annotated[int, Meta(ge=0)] = 2 * 1024 * 1024


def given_conversation(ctx: Context) -> str | None:
    """The client's X-Conversation-ID, stripped; None when it sent none (or a blank one)."""
    # The raw headers (ASGI's names are lower case) scanned here: most requests send none, which
    # get() finds out by raising and catching a KeyError, and getlist() by lowering and encoding the
    # name and building a list on every call.
    for name, value in ctx.headers.raw:
        if name == _CONVERSATION_NAME:
            return value.decode("latin-1").strip() or None
    return None


def conversation_id(given: str | None, minted: str) -> str:
    """The client's id (`given_conversation`: its own id, or a UUID, normalised), else `minted`."""
    if given is None:
        return minted
    normalised = normalise(given)
    if normalised is None:
        raise InvalidRequest(
            f"{CONVERSATION_HEADER} must be 1 to 128 characters of A-Z, a-z, 0-9, '.', '_', ':' and '-'",
            param=CONVERSATION_HEADER,
        )
    return normalised


class AuditStage:
    def __init__(self, settings: AuditSettings, sink: AuditSink) -> None:
        self._policy = ContentPolicy(settings.content, settings.max_message_bytes)
        self._sink = sink

    async def __call__(self, ctx: Context, call_next: Handler) -> Reply:
        exchange = Exchange(ctx, self._sink, self._policy)
        try:
            given = given_conversation(ctx)
            # A new conversation is named by the request that opens it (as the insert names one it
            # keeps apart): one id minted instead of two.
            conversation = conversation_id(given, exchange.id)
            owners = self._sink.owners
            if owners is not None and not self._settled(owners, ctx, conversation, given is None):
                await self._claim(owners, ctx, conversation, exchange.started_at)
            ctx.conversation_id = ctx.response_headers[CONVERSATION_HEADER] = conversation
            reply = await call_next(ctx)
        except asyncio.CancelledError:
            # The client went away (or the deadline hit) before any answer: record without waiting.
            exchange.finish_nowait(None, Failure.client_closed("the client closed the request"))
            raise
        except Exception as exc:
            await exchange.finish(None, Failure.of(exc))
            raise
        if reply.stream is not None:
            tap(reply, exchange)
        elif reply.completion is not None:
            outcome = ctx.outcome
            outcome.prompt_tokens, outcome.completion_tokens = outcome.tokens(reply.completion)
            # `finish` without its coroutine (see `offer`).
            waiting = exchange.offer(Answer.of(reply.completion), None, True)
            if waiting is not None:
                await waiting
        return reply

    def _settled(self, owners: Owners, ctx: Context, conversation: str, minted: bool) -> bool:
        """Whether the caller's key may add to the conversation without asking `owners`: it was minted
        here, for this key, or no one can tell now (the insert keeps other keys' records apart). Most
        requests mint theirs: they are settled without a coroutine."""
        if minted:
            owners.remember(conversation, ctx.principal.name if ctx.principal is not None else None)
            return True
        return self._sink.database_failing

    async def _claim(self, owners: Owners, ctx: Context, conversation: str, started_at: datetime) -> None:
        """A conversation the client named belongs to the key that opened it: refused to any other."""
        key = ctx.principal.name if ctx.principal is not None else None
        pending, trace = owners.claim(conversation, key, model=ctx.model, at=started_at), ctx.trace
        owned = await (pending if trace is None else trace.waited("conversation claim", pending))
        if owned is False:
            raise PermissionDenied(
                f"{CONVERSATION_HEADER} names a conversation another key opened; use an id of your own",
                param=CONVERSATION_HEADER,
                code="conversation_not_owned",
            )


class Exchange:
    """One request being audited: its id and start, minted at entry; recorded exactly once.

    A streamed answer's tap, too: it assembles the answer and records the exchange when the stream
    ends, fails, or is closed early.
    """

    __slots__ = ("_answer", "_policy", "_sink", "ctx", "id", "recorded", "started_at")

    def __init__(self, ctx: Context, sink: AuditSink, policy: ContentPolicy) -> None:
        self.ctx = ctx
        self.id = new_id()
        self.started_at = datetime.now(UTC)
        self._sink = sink
        self._policy = policy
        self.recorded = False
        # Made at a stream's first batch: most exchanges never hold one.
        self._answer: Answer | None = None

    def _build(self, answer: Answer | None, failure: Failure | None) -> AuditRecord:
        self.recorded = True
        return build_record(
            self.ctx,
            record_id=self.id,
            started_at=self.started_at,
            policy=self._policy,
            answer=answer,
            failure=failure,
            max_messages=self._sink.limits.max_record_messages,
        )

    async def finish(self, answer: Answer | None, failure: Failure | None, *, required: bool = False) -> None:
        waiting = self.offer(answer, failure, required)
        if waiting is not None:
            await waiting

    def offer(self, answer: Answer | None, failure: Failure | None, required: bool) -> Awaitable[None] | None:
        """The record handed to the sink; what to wait for when the sink makes its caller wait, else None.
        (The sink's `submit` without its coroutine: most records are queued, and nothing waits.)"""
        if self.recorded:
            return None
        waiter = self._sink.offer(self._build(answer, failure))
        return None if waiter is None else self._wait(waiter, required)

    async def _wait(self, waiter: Awaitable[None], required: bool) -> None:
        pending: Awaitable[None] = asyncio.shield(waiter)  # a client gone mid-write must not cancel it
        trace = self.ctx.trace
        try:
            await (pending if trace is None else trace.waited("audit hand-off", pending))
        except AuditError as exc:
            log.error("audit record %s could not be kept: %s", self.id, exc)
            if required:
                # Not yet answered: refuse rather than answer without a record.
                raise ServiceUnavailable("the audit log cannot be written; try again later") from exc

    def finish_nowait(self, answer: Answer | None, failure: Failure | None) -> None:
        if not self.recorded:
            self._sink.offer(self._build(answer, failure))

    # pipeline.taps.StreamTap: a streamed answer

    def seen(self, batch: list[Delta]) -> None:
        answer = self._answer
        if answer is None:
            answer = self._answer = Answer()
        answer.add(batch)

    def ended(self, error: Exception | None) -> Awaitable[None] | None:
        # (Not on a cancellation: a timer around read, chunking's, cancels it with nothing lost.)
        return self.offer(self._streamed(), None if error is None else Failure.of(error), False)

    def closed(self) -> None:
        if not self.recorded:
            failure = Failure.client_closed("the client closed the stream before its end")
            self.finish_nowait(self._streamed(), failure)

    def _streamed(self) -> Answer:
        return self._answer if self._answer is not None else Answer()


def build(settings: AuditSettings, services: Services) -> AuditStage:
    return AuditStage(settings, services.audit)


STAGE = StageType(name="audit", settings=AuditSettings, build=build)
