"""Request fields that would change the answer in ways Ollama cannot follow: refused with 400, not ignored.

A client that asks for log probabilities, a forced tool call or audio and silently gets an ordinary
answer goes wrong later and far away; a 400 naming the field tells it now. Fields that do not change
the answer (`user`, `metadata`, `store`, `service_tier`...) stay accepted, as unknown fields are.
"""

from __future__ import annotations

from citadel_proxy import errors
from citadel_proxy.openai.wire import ChatRequest, CompletionRequest, SamplingRequest

_TOOL_CHOICES_HONOURED = (None, "auto", "none")


def refuse_unhonourable_chat(req: ChatRequest) -> None:
    _refuse_shared(req)
    if req.logprobs:
        raise _unsupported("logprobs are not available through this gateway", "logprobs")
    if req.top_logprobs:
        raise _unsupported("top_logprobs are not available through this gateway", "top_logprobs")
    if req.tool_choice not in _TOOL_CHOICES_HONOURED:
        raise _unsupported(
            'Ollama cannot force a tool call: tool_choice may be "auto" or "none"', "tool_choice"
        )
    if req.parallel_tool_calls is False and req.tools:
        raise _unsupported(
            "Ollama cannot limit an answer to one tool call: leave parallel_tool_calls out or true",
            "parallel_tool_calls",
        )
    if req.modalities and any(modality != "text" for modality in req.modalities):
        raise _unsupported('only text answers are available: modalities may be ["text"]', "modalities")
    if req.audio is not None:
        raise _unsupported("audio answers are not available through this gateway", "audio")
    if req.functions:
        raise _unsupported("functions is deprecated and not supported: send them as tools", "functions")
    if req.function_call not in _TOOL_CHOICES_HONOURED:
        raise _unsupported("function_call is deprecated and not supported: send tools", "function_call")
    if req.web_search_options is not None:
        raise _unsupported("web search is not available through this gateway", "web_search_options")


def refuse_unhonourable_completion(req: CompletionRequest) -> None:
    _refuse_shared(req)
    if req.best_of is not None and req.best_of > 1:
        raise _unsupported("best_of greater than 1 is not supported", "best_of")
    if req.echo:
        raise _unsupported("echo is not supported", "echo")
    # 0 still asks for the sampled tokens' log probabilities; only null (or leaving it out) asks for none.
    if req.logprobs is not None:
        raise _unsupported("logprobs are not available through this gateway", "logprobs")


def _refuse_shared(req: SamplingRequest) -> None:
    if req.n is not None and req.n != 1:
        raise _unsupported("only n=1 is supported", "n")
    if req.logit_bias:
        raise _unsupported("logit_bias is not available through this gateway", "logit_bias")


def _unsupported(message: str, param: str) -> errors.UnsupportedParameter:
    return errors.UnsupportedParameter(message, param=param)
