"""Model management across the backends: one merged list, and pull, delete and status on each."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import msgspec

from citadel_proxy import errors
from citadel_proxy.fleet.backend import Backend
from citadel_proxy.fleet.fleet import Fleet
from citadel_proxy.management import ollama, pulls
from citadel_proxy.management.names import canonical
from citadel_proxy.management.status import ollama_status
from citadel_proxy.management.wire import OllamaStatus, PullEvent, TagModel


def targets(fleet: Fleet, backend: str | None) -> list[Backend]:
    chosen = fleet.chosen(backend)
    if not chosen:
        raise errors.NotFound(f"no backend is named {backend!r}", param="backend", code="backend_not_found")
    return chosen


async def merged_tags(fleet: Fleet) -> tuple[list[TagModel], dict[str, list[str]], dict[str, str]]:
    """Every backend's models once each, where each one is, and the backends that could not be asked;
    with every backend failing, the first one's error."""
    answers = await asyncio.gather(*(ollama.tags(b.client) for b in fleet.backends), return_exceptions=True)
    models: dict[str, TagModel] = {}
    where: dict[str, list[str]] = {}
    failed: dict[str, str] = {}
    for backend, answer in zip(fleet.backends, answers, strict=True):
        if isinstance(answer, errors.GatewayError):
            failed[backend.name] = answer.message
            continue
        if isinstance(answer, BaseException):
            raise answer
        for model in answer:
            key = canonical(model.name)
            models.setdefault(key, model)
            where.setdefault(key, []).append(backend.name)
    if len(failed) == len(fleet.backends):
        first = answers[0]
        assert isinstance(first, errors.GatewayError)
        raise first
    return list(models.values()), where, failed


async def delete(fleet: Fleet, chosen: list[Backend], name: str) -> list[str]:
    """Delete `name` wherever it is among `chosen`; the backends it was deleted from. 404 if none had it."""
    answers = await asyncio.gather(*(ollama.delete(b.client, name) for b in chosen), return_exceptions=True)
    deleted = [b.name for b, answer in zip(chosen, answers, strict=True) if answer is None]
    if fleet.several:  # one Ollama has no inventory to keep
        await fleet.refresh(chosen)
    for answer in answers:
        if isinstance(answer, BaseException) and not isinstance(answer, errors.ModelNotFound):
            raise answer
    if not deleted:
        raise ollama.not_installed(name)
    return deleted


async def merged_events(
    fleet: Fleet, jobs: list[tuple[Backend, pulls.PullJob]], heartbeat_s: float
) -> AsyncIterator[PullEvent]:
    """The events of one pull per backend, as they come, each naming its backend; the inventory is read
    again once they have all ended."""
    queue: asyncio.Queue[PullEvent | None] = asyncio.Queue()

    async def relay(backend: Backend, job: pulls.PullJob) -> None:
        try:
            async for event in pulls.events(job, heartbeat_s):
                await queue.put(msgspec.structs.replace(event, backend=backend.name))
        finally:
            await queue.put(None)

    tasks = [asyncio.create_task(relay(backend, job)) for backend, job in jobs]
    try:
        running = len(tasks)
        while running:
            event = await queue.get()
            if event is None:
                running -= 1
            else:
                yield event
        await fleet.refresh([backend for backend, _ in jobs])
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def status(fleet: Fleet) -> OllamaStatus:
    """One backend's status as before; with several, each one's, reachable while any is."""
    reports = await asyncio.gather(*(ollama_status(b.client) for b in fleet.backends))
    if not fleet.several:
        return reports[0]
    best = next((r for r in reports if r.reachable), reports[0])
    by_name = {b.name: r for b, r in zip(fleet.backends, reports, strict=True)}
    return msgspec.structs.replace(best, backends=by_name)
