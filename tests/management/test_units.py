"""Pure parts of model management: name rules, percent, processor split, catalog, pull readers."""

from __future__ import annotations

import asyncio

import pytest

from citadel_proxy import errors
from citadel_proxy.config.schema import Config, ModelEntry, ModelRouting, Ollama
from citadel_proxy.management import catalog, ollama, pulls
from citadel_proxy.management.names import canonical, validate_name
from citadel_proxy.management.wire import PullEvent, PullLine, Show, TagModel


@pytest.mark.parametrize(
    "name",
    [
        "phi3",
        "phi3:latest",
        "qwen2.5:0.5b",
        "library/llama3.2:3b-instruct-q4_K_M",
        "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M",
        "registry.ollama.ai/library/phi3:latest",
        "localhost:5000/team/model:v1",
        "_private",
    ],
)
def test_valid_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        " phi3",
        "phi3 ",
        "phi3:",
        ":tag",
        "a/b/c/d",
        "ns.x/model",
        "a//b",
        "../etc/passwd",
        "m:t:u",
        "m@sha256",
    ],
)
def test_invalid_names(name: str) -> None:
    with pytest.raises(errors.InvalidRequest) as caught:
        validate_name(name, param="name")
    assert caught.value.param == "name"


def test_canonical() -> None:
    assert canonical("Phi3") == "phi3:latest"
    assert canonical("registry.ollama.ai/library/phi3:mini") == "phi3:mini"
    assert canonical("localhost:5000/team/model") == "localhost:5000/team/model:latest"


@pytest.mark.parametrize(
    ("size", "vram", "text"),
    [(100, 100, "100% GPU"), (100, 0, "100% CPU"), (100, 60, "40%/60% CPU/GPU"), (0, 0, "100% CPU")],
)
def test_processor(size: int, vram: int, text: str) -> None:
    assert ollama.processor(size, vram) == text


def test_model_facts_without_architecture() -> None:
    assert ollama.model_facts(Show()) == (None, None, None)
    info = {"general.architecture": "llama", "llama.context_length": 131072, "general.parameter_count": 8}
    assert ollama.model_facts(Show(model_info=info)) == ("llama", 131072, 8)


def test_progress_event() -> None:
    line = PullLine(status="pulling abc", digest="sha256:abc", total=3, completed=1)
    assert pulls.progress_event("m", line).percent == 33.3
    assert pulls.progress_event("m", PullLine(status="success")) == PullEvent(model="m", status="success")


def test_catalog_matches_names_as_ollama_does() -> None:
    config = Config(
        ollama=Ollama(models=[ModelEntry(name="Phi3", active=False, description="small")]),
        model_routing=ModelRouting(aliases={"fast": "phi3:latest"}, valid_models=["openchat"]),
    )
    tags = [TagModel(name="phi3:latest"), TagModel(name="openchat:latest"), TagModel(name="other:1b")]
    listed = {m.name: m for m in catalog.installed(config, tags).models}
    assert (listed["phi3:latest"].configured, listed["phi3:latest"].active) == (True, False)
    assert listed["phi3:latest"].aliases == ["fast"]
    assert listed["openchat:latest"].configured is True
    assert listed["other:1b"].configured is False
    view = catalog.configured(config, tags, None)
    assert [(m.name, m.present, m.active, m.description) for m in view.models] == [
        ("Phi3", True, False, "small")
    ]
    assert view.valid_models == ["openchat"]


async def test_a_slow_reader_skips_old_progress_but_not_the_end() -> None:
    job = pulls.PullJob("m")
    reader = job.subscribe()
    for i in range(1000):
        job.publish(PullEvent(model="m", status="pulling x", completed=i))
    job.publish(PullEvent(model="m", status="success"))
    job.end()
    seen = []
    while (event := await reader.next()) is not None:
        seen.append(event)
    assert len(seen) <= 256
    assert seen[-1].status == "success"


async def test_late_reader_gets_the_latest_event_of_each_step() -> None:
    job = pulls.PullJob("m")
    job.publish(PullEvent(model="m", status="pulling manifest"))
    for i in range(3):
        job.publish(PullEvent(model="m", status="pulling x", completed=i))
    reader = job.subscribe()
    job.end()
    seen = [e async for e in pulls.events(job, 1.0)] if False else []
    while (event := await reader.next()) is not None:
        seen.append((event.status, event.completed))
    assert seen == [("pulling manifest", None), ("pulling x", 2)]


async def test_heartbeat_repeats_the_last_event_while_ollama_is_silent() -> None:
    job = pulls.PullJob("m")
    stream = pulls.events(job, 0.02)
    job.publish(PullEvent(model="m", status="verifying sha256 digest"))
    first = await anext(stream)
    again = await asyncio.wait_for(anext(stream), 1)
    assert first == again
    job.end()
    await stream.aclose()
