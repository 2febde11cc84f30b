"""Record remote AI calls automatically from the official provider clients (off by default).

    from sci.ai import instrument
    instrument("web")        # from now on each chat/messages call is reported

Like EcoLogits' tracers, ``instrument`` wraps the clients' methods in place, for the
packages that are installed: OpenAI ``chat.completions.create`` and
``responses.create``, Anthropic ``messages.create``, Google GenAI
``models.generate_content``, Mistral ``chat.complete`` (synchronous calls). After each
call the wrapper reads the answer's token usage and model, times the call, and hands it
to ``sci.client.call`` (batched, never blocking, never raising). Streaming requests are
passed through unrecorded (their usage arrives in the last chunk); count those with
``sci.client.call`` yourself. ``uninstrument()`` restores the originals.
"""

from __future__ import annotations

import functools
import importlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sci import client as _client

log = logging.getLogger("sci_agent.client")

_ORIGINAL = "__sci_agent_original__"


@dataclass(frozen=True, slots=True)
class Target:
    """One client method to wrap and how to read its answer's (input, output) tokens."""

    provider: str
    module: str
    qualname: str  # Class.method
    usage: Callable[[Any], tuple[float, float] | None]


def _openai_chat(answer: Any) -> tuple[float, float] | None:
    u = getattr(answer, "usage", None)
    return None if u is None else (u.prompt_tokens, u.completion_tokens)


def _in_out(answer: Any) -> tuple[float, float] | None:
    u = getattr(answer, "usage", None)
    return None if u is None else (u.input_tokens, u.output_tokens)


def _google(answer: Any) -> tuple[float, float] | None:
    u = getattr(answer, "usage_metadata", None)
    if u is None:
        return None
    out = (u.candidates_token_count or 0) + (getattr(u, "thoughts_token_count", 0) or 0)
    return u.prompt_token_count or 0, out


TARGETS = (
    Target("openai", "openai.resources.chat.completions", "Completions.create", _openai_chat),
    Target("openai", "openai.resources.responses.responses", "Responses.create", _in_out),
    Target("anthropic", "anthropic.resources", "Messages.create", _in_out),
    Target("google", "google.genai.models", "Models.generate_content", _google),
    Target("mistral", "mistralai.chat", "Chat.complete", _openai_chat),
)
PROVIDERS = tuple(sorted({t.provider for t in TARGETS}))

_wrapped: list[tuple[type, str]] = []


def instrument(
    app: str,
    providers: tuple[str, ...] | list[str] | None = None,
    calls: _client.CallsClient | None = None,
) -> list[str]:
    """Wrap the installed clients of ``providers`` (all by default) to report ``app``'s calls.

    Returns the methods wrapped (``openai: Completions.create``...); a provider whose
    package is not installed is skipped. Calling it again re-targets the app.
    """
    unknown = sorted(set(providers or ()) - set(PROVIDERS))
    if unknown:
        raise ValueError(f"providers: unknown {', '.join(unknown)} (known: {', '.join(PROVIDERS)})")
    uninstrument()
    done = []
    for target in TARGETS:
        if providers is not None and target.provider not in providers:
            continue
        try:
            module = importlib.import_module(target.module)
        except ImportError:
            continue
        owner_name, method = target.qualname.split(".")
        owner = getattr(module, owner_name, None)
        original = getattr(owner, method, None) if owner is not None else None
        if not isinstance(owner, type) or original is None:
            log.warning("sci.ai: %s.%s not found; not recorded", target.module, target.qualname)
            continue
        setattr(owner, method, _wrapper(original, target, app, calls))
        _wrapped.append((owner, method))
        done.append(f"{target.provider}: {target.qualname}")
    return done


def uninstrument() -> None:
    """Put every wrapped method back."""
    while _wrapped:
        owner, method = _wrapped.pop()
        current = getattr(owner, method)
        setattr(owner, method, getattr(current, _ORIGINAL, current))


def _wrapper(
    original: Callable[..., Any], target: Target, app: str, calls: _client.CallsClient | None
) -> Callable[..., Any]:
    @functools.wraps(original)
    def wrapped(self: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        answer = original(self, *args, **kwargs)
        if not kwargs.get("stream"):
            _record(answer, kwargs, target, app, calls, time.perf_counter() - start)
        return answer

    setattr(wrapped, _ORIGINAL, original)
    return wrapped


def _record(
    answer: Any,
    kwargs: dict[str, Any],
    target: Target,
    app: str,
    calls: _client.CallsClient | None,
    latency_s: float,
) -> None:
    """Report one answered call; a surprise in the answer's shape is logged, never raised."""
    try:
        tokens = target.usage(answer)
        model = getattr(answer, "model", None) or getattr(answer, "model_version", None)
        model = str(model or kwargs.get("model") or "")
        if tokens is None or not model:
            log.debug("sci.ai: %s answer without usage or model; not recorded", target.qualname)
            return
        client = calls or _client.default_calls_client()
        client.call(app, target.provider, model, tokens[0], tokens[1], latency_s)
    except Exception as exc:
        log.debug("sci.ai: cannot read %s's answer: %s", target.qualname, exc)
