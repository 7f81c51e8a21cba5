"""Ollama's runtime options on the neutral request: a free-form options map read into `Options`, and the
configured defaults (the model's in `ollama.models[]`: num_ctx, keep_alive, options; over them the
pipeline's `options` and `keep_alive`) put under what a request set."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from citadel_proxy import errors
from citadel_proxy.pipeline.request import InferenceRequest, Options

if TYPE_CHECKING:
    from citadel_proxy.config.models import ModelRouter
    from citadel_proxy.pipeline.spec import Pipeline

# The options the neutral request names (the rate limiter, the limits and the audit read them); the rest
# of a map (num_ctx, top_k, num_gpu, …) travels in `extra`, untouched.
_NAMED = ("num_predict", "temperature", "top_p", "seed", "stop", "frequency_penalty", "presence_penalty")


_UNSET = Options()


def set_or_none(options: Options | None) -> Options | None:
    """None for options that set nothing, so that the model's own defaults apply."""
    return None if options == _UNSET else options


def options_from_map(given: dict[str, Any] | None, param: str = "options") -> Options | None:
    if not given:
        return None
    extra = {k: v for k, v in given.items() if k not in _NAMED}
    stop = given.get("stop")
    if not (stop is None or isinstance(stop, str) or _strings(stop)):
        raise errors.InvalidRequest(f"{param}.stop: a string or a list of strings", param=f"{param}.stop")
    try:
        return Options(
            num_predict=_number(given, "num_predict", int),
            temperature=_number(given, "temperature", float),
            top_p=_number(given, "top_p", float),
            seed=_number(given, "seed", int),
            stop=[stop] if isinstance(stop, str) else stop,
            frequency_penalty=_number(given, "frequency_penalty", float),
            presence_penalty=_number(given, "presence_penalty", float),
            extra=extra or None,
        )
    except (TypeError, ValueError) as exc:
        raise errors.InvalidRequest(f"{param}: {exc}", param=param) from None


def options_to_map(options: Options | None) -> dict[str, Any]:
    if options is None:
        return {}
    named = msgspec.structs.asdict(options)
    extra = named.pop("extra") or {}
    return extra | {k: v for k, v in named.items() if v is not None}


def with_model_defaults(
    request: InferenceRequest, models: ModelRouter, pipeline: Pipeline
) -> InferenceRequest:
    """The request over its pipeline's options, over its model's configured defaults."""
    entry = models.defaults.get(request.model)
    if entry is None and pipeline.options is None and pipeline.keep_alive is None:
        return request
    base: dict[str, Any] = {}
    keep_alive = pipeline.keep_alive
    if entry is not None:
        base |= entry.options or {}
        if entry.num_ctx is not None:
            base["num_ctx"] = entry.num_ctx
        keep_alive = keep_alive if keep_alive is not None else entry.keep_alive
    base |= pipeline.options or {}
    keep_alive = request.keep_alive if request.keep_alive is not None else keep_alive
    if not base and keep_alive == request.keep_alive:
        return request  # a model listed without defaults
    options = options_from_map(base | options_to_map(request.options)) if base else request.options
    return msgspec.structs.replace(request, options=options, keep_alive=keep_alive)


def _strings(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _number(given: dict[str, Any], name: str, kind: type[int] | type[float]) -> Any:
    value = given.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number")
    if kind is int and value != int(value):
        raise ValueError(f"{name} must be an integer")
    return kind(value)
