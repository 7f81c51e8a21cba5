"""Model pulls that belong to the app, not to a request: they go on when the client leaves.

One background task per model (per worker process): a second request for a model already being pulled
attaches to that pull and sees its progress, starting with the latest line of each step so far. The
app's lifespan opens the manager and, at shutdown, cancels the pulls still running (Ollama keeps the
partial download; pulling again resumes it, protocol notes 6.3). Several workers may each run a pull of
the same model; Ollama shares one download between them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator

import aiohttp
import msgspec

from citadel_proxy import errors
from citadel_proxy.management.names import canonical
from citadel_proxy.management.wire import PullEvent, PullLine
from citadel_proxy.upstream.client import OllamaClient
from citadel_proxy.upstream.ndjson import LineBlocks

log = logging.getLogger(__name__)

# A reader slower than Ollama's progress (a line every ~60 ms per layer) skips the oldest lines;
# the last one, success or error, is never dropped.
_BACKLOG = 256
_encode = msgspec.json.Encoder().encode
_decoder = msgspec.json.Decoder(PullLine)


class Subscription:
    """The events of one pull for one reader. Cancel-safe: an event leaves only once it is returned."""

    def __init__(self, replay: list[PullEvent]) -> None:
        self._items: deque[PullEvent] = deque(replay, maxlen=max(_BACKLOG, len(replay)))
        self._ready = asyncio.Event()
        self._closed = False

    def push(self, event: PullEvent) -> None:
        self._items.append(event)
        self._ready.set()

    def close(self) -> None:
        self._closed = True
        self._ready.set()

    async def next(self) -> PullEvent | None:
        """The next event, or None once the pull has ended and everything was read."""
        while not self._items:
            if self._closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()


class PullJob:
    def __init__(self, model: str) -> None:
        self.model = model
        self.started = asyncio.Event()
        self.start_error: errors.GatewayError | None = None
        self.ended = False
        # The latest event of each step (`pulling <layer>`, `verifying ...`), in order: what a late
        # reader needs to see where the pull stands without the whole history.
        self._latest: dict[str, PullEvent] = {}
        self._readers: set[Subscription] = set()

    def subscribe(self) -> Subscription:
        reader = Subscription(list(self._latest.values()))
        if self.ended:
            reader.close()
        else:
            self._readers.add(reader)
        return reader

    def unsubscribe(self, reader: Subscription) -> None:
        self._readers.discard(reader)

    def publish(self, event: PullEvent) -> None:
        self._latest.pop(event.status, None)
        self._latest[event.status] = event
        for reader in self._readers:
            reader.push(event)

    def fail(self, error: errors.GatewayError) -> None:
        self.publish(error_event(self.model, error))

    def end(self) -> None:
        self.ended = True
        self.started.set()
        for reader in self._readers:
            reader.close()
        self._readers.clear()

    async def wait_started(self, timeout_s: float) -> None:
        """Returns once Ollama accepted the pull; raises its error if it refused or was unreachable,
        TimeoutError after `timeout_s` (the pull itself goes on)."""
        async with asyncio.timeout(timeout_s):
            await self.started.wait()
        if self.start_error is not None:
            raise self.start_error


class PullManager:
    def __init__(self, client: OllamaClient) -> None:
        self._client = client
        self._jobs: dict[str, tuple[PullJob, asyncio.Task[None]]] = {}
        self._closing = False

    def pull(self, model: str) -> PullJob:
        """The running pull of `model`, or a new one."""
        if self._closing:
            raise errors.ServiceUnavailable("the gateway is shutting down; pull again in a moment")
        key = canonical(model)
        running = self._jobs.get(key)
        if running is not None:
            return running[0]
        job = PullJob(model)
        task = asyncio.create_task(self._run(key, job), name=f"pull {model}")
        self._jobs[key] = (job, task)
        return job

    async def aclose(self) -> None:
        self._closing = True
        tasks = [task for _, task in self._jobs.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, key: str, job: PullJob) -> None:
        try:
            await self._pull(job)
        except asyncio.CancelledError:
            job.fail(errors.ServiceUnavailable("the gateway is shutting down: the pull stopped; pull again"))
            raise
        finally:
            job.end()
            if self._jobs.get(key, (None,))[0] is job:
                del self._jobs[key]

    async def _pull(self, job: PullJob) -> None:
        body = _encode({"model": job.model, "stream": True})
        try:
            response = await self._client.open_response("POST", "/api/pull", body)
        except errors.GatewayError as exc:
            job.start_error = exc
            return
        job.started.set()
        log.info("pulling model %s", job.model)
        try:
            await relay(response, job)
        except errors.GatewayError as exc:
            log.warning("pull of %s failed: %s", job.model, exc.message)
            job.fail(exc)
        finally:
            response.close()


async def relay(response: aiohttp.ClientResponse, job: PullJob) -> None:
    """Ollama's progress lines to the job's readers, until `success` or an error line."""
    blocks = LineBlocks(response.content)
    while True:
        try:
            block = await blocks.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise errors.UpstreamIncomplete(f"Ollama's pull stream broke off: {exc!r}") from None
        if block is None:
            raise errors.UpstreamIncomplete("Ollama ended the pull stream before it reported success")
        try:
            lines = _decoder.decode_lines(block)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise errors.UpstreamMalformed(f"Ollama sent a pull line that is not valid: {exc}") from None
        for line in lines:
            if line.error is not None:
                raise pull_error(job.model, line.error)
            job.publish(progress_event(job.model, line))
            if line.status == "success":
                log.info("pulled model %s", job.model)
                return


def progress_event(model: str, line: PullLine) -> PullEvent:
    percent = round(min(line.completed, line.total) * 100 / line.total, 1) if line.total > 0 else None
    return PullEvent(
        model=model,
        status=line.status,
        digest=line.digest or None,
        total=line.total or None,
        completed=line.completed if line.total > 0 else None,
        percent=percent,
    )


def error_event(model: str, error: errors.GatewayError) -> PullEvent:
    return PullEvent(model=model, status="error", error=error.body().error)


def pull_error(model: str, message: str) -> errors.GatewayError:
    # How Ollama says that the registry has no such model (protocol notes 6.3).
    if "file does not exist" in message:
        return errors.ModelNotFound(f"the registry has no model '{model}' (Ollama: {message})", param="model")
    return errors.UpstreamError(f"Ollama could not pull '{model}': {message}", code="pull_failed")


async def events(job: PullJob, heartbeat_s: float) -> AsyncIterator[PullEvent]:
    """A reader's events; after `heartbeat_s` of silence (Ollama verifying a large file) the latest
    event again, so proxies with short read timeouts keep the stream open."""
    reader = job.subscribe()
    last: PullEvent | None = None
    try:
        while True:
            try:
                event = await asyncio.wait_for(reader.next(), heartbeat_s)
            except TimeoutError:
                if last is not None:
                    yield last
                continue
            if event is None:
                return
            last = event
            yield event
    finally:
        job.unsubscribe(reader)


async def open_pull_manager(client: OllamaClient, stack: contextlib.AsyncExitStack) -> PullManager:
    """For the app's lifespan: the manager's pulls are cancelled when the stack closes."""
    manager = PullManager(client)
    stack.push_async_callback(manager.aclose)
    return manager
