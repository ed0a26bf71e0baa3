"""Text generation over the catalog: OpenAI ``/v1/completions`` and ``/v1/chat/completions``.

The same ``model`` choices as embeddings (``serving.resolve_model``: an adapter, ``base``, a base,
``mixture`` or ``auto``) on a causal-LM base (SmolLM2). Prompts of any number of requests, for any
adapters, decode together in one batch of the base's batcher (``adapterhub.serving.causal``: one
base forward pass per step for all rows). A batch runs until its last row stops, so a request
waits for the batch it joined: the batching is static, not continuous (vLLM's iteration-level
scheduling would admit new requests between steps).

Streaming: ``on_text(index, delta)`` is called on the engine's thread with each new piece of text
of choice ``index`` (whole characters only: a token that ends inside a multi-byte character waits
for the next one).
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from adapterhub.app.serving import batch_rows, check_texts, limits_of, resolve_model, served_base, then
from adapterhub.errors import InvalidParameterError

if TYPE_CHECKING:
    from adapterhub.app.core import HubCore
    from adapterhub.store import TokenRecord

__all__ = ["chat_completions", "completions"]

TextFn = Callable[[int, str], None]
MAX_PROMPTS = 16  # prompts per completions request
MAX_CONTEXT = 2048  # prompt + generated tokens per row
ROLES = ("system", "user", "assistant")
_tokenizer_lock = threading.Lock()


def _check_sampling(max_tokens: Any, temperature: Any, top_p: Any, seed: Any, limit: int) -> None:
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 1 <= max_tokens <= limit:
        raise InvalidParameterError(f"max_tokens must be an integer from 1 to {limit}, got {max_tokens!r}")
    for name, value, low, high in (("temperature", temperature, 0.0, 2.0), ("top_p", top_p, 0.0, 1.0)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or not low <= value <= high:
            raise InvalidParameterError(f"{name} must be a number from {low} to {high}, got {value!r}")
    if top_p == 0:
        raise InvalidParameterError("top_p must be greater than 0")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63):
        raise InvalidParameterError(f"seed must be a non-negative integer, got {seed!r}")


class _Streamer:
    """Turns one row's token ids into text deltas (whole characters only)."""

    def __init__(self, decode: Callable[[list[int]], str], index: int, on_text: TextFn) -> None:
        self.decode, self.index, self.on_text = decode, index, on_text
        self.ids: list[int] = []
        self.sent = ""

    def __call__(self, token: int) -> None:
        self.ids.append(token)
        text = self.decode(self.ids)
        if text.endswith("\ufffd"):
            return
        if text.startswith(self.sent) and len(text) > len(self.sent):
            self.on_text(self.index, text[len(self.sent):])
            self.sent = text


def _prepare(core: HubCore, token: TokenRecord | None, model: str, route_texts: list[str], mixture: Any) -> Any:
    """The resolved target and the causal base that serves it (built on first use)."""
    target = resolve_model(core, token, model, route_texts, kind="causal_lm", default_base="smollm2", mixture=mixture)
    return target, served_base(core, target.base)


def _queue(
    core: HubCore,
    served: Any,
    target: Any,
    prompts: list[list[int]],
    route_texts: list[str],
    *,
    max_tokens: int,
    temperature: float,
    top_p: float,
    seed: int | None,
    on_text: TextFn | None,
) -> Future[list[Any]]:
    """One generation row per prompt, queued on the base's batcher; a future of their results."""
    from adapterhub.serving.causal import GenerationRow

    keyed = batch_rows(core, served, target, route_texts)
    rows = []
    for i, (ids, (_, keys)) in enumerate(zip(prompts, keyed)):
        if not ids:
            raise InvalidParameterError(f"prompt {i} has no tokens")
        if len(ids) + max_tokens > MAX_CONTEXT:
            raise InvalidParameterError(
                f"prompt {i} has {len(ids)} tokens; with max_tokens {max_tokens} that exceeds the {MAX_CONTEXT}-token "
                "context of this server"
            )
        streamer = _Streamer(served.engine.lm.decode, i, on_text) if on_text else None
        rows.append(GenerationRow(list(ids), keys, max_tokens, float(temperature), float(top_p),  # type: ignore[arg-type]
                                  None if seed is None else seed + i, streamer))
    return served.batcher.submit(rows)


def _locked(fn: Callable[[], list[int]]) -> list[int]:
    """Run a tokenizer call under the lock shared by request threads (its settings are mutable state)."""
    with _tokenizer_lock:
        return fn()


def _usage(generations: Sequence[Any]) -> dict[str, int]:
    prompt = sum(g.prompt_tokens for g in generations)
    completion = sum(len(g.token_ids) for g in generations)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def completions(
    core: HubCore,
    token: TokenRecord | None,
    model: str,
    prompt: Any,
    *,
    max_tokens: int = 16,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int | None = None,
    mixture: Any = None,
    on_text: TextFn | None = None,
) -> Future[dict[str, Any]]:
    """Continue each prompt (OpenAI ``/v1/completions``; one choice per prompt), as a Future.

    Raises:
        InvalidParameterError: bad prompts or sampling parameters, a prompt too long.
        RepoNotFoundError, IncompatibleAdaptersError: see ``serving.resolve_model``.
        OverloadedError: the queue is full (503).
    """
    limits = limits_of(core)
    texts = check_texts(prompt, limits, what="prompt")
    if len(texts) > MAX_PROMPTS:
        raise InvalidParameterError(f"at most {MAX_PROMPTS} prompts per request, got {len(texts)}")
    _check_sampling(max_tokens, temperature, top_p, seed, limits.max_new_tokens)
    target, served = _prepare(core, token, model, texts, mixture)
    lm = served.engine.lm
    prompts = [_locked(lambda t=t: lm.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    future = _queue(core, served, target, prompts, texts, max_tokens=max_tokens, temperature=temperature,
                    top_p=top_p, seed=seed, on_text=on_text)
    created, rid = int(time.time()), f"cmpl-{uuid.uuid4().hex[:24]}"

    def response(generations: list[Any]) -> dict[str, Any]:
        choices = [{"index": i, "text": lm.decode(g.token_ids), "logprobs": None, "finish_reason": g.finish_reason}
                   for i, g in enumerate(generations)]
        return {"id": rid, "object": "text_completion", "created": created, "model": target.label,
                "choices": choices, "usage": _usage(generations), **_routes(target)}

    return then(future, response)


def _routes(target: Any) -> dict[str, Any]:
    if target.routes is None:
        return {}
    return {"routes": [[{"name": n, "weight": round(w, 6)} for n, w in r] for r in target.routes]}


def _check_messages(messages: Any, limits: Any) -> list[dict[str, str]]:
    if not isinstance(messages, list) or not messages or len(messages) > 64:
        raise InvalidParameterError("'messages' must be a list of 1 to 64 {role, content} objects")
    out = []
    for m in messages:
        if not isinstance(m, Mapping) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise InvalidParameterError(f"each message needs a role ({', '.join(ROLES)}) and text content")
        if len(m["content"]) > limits.max_input_chars:
            raise InvalidParameterError(f"a message may be at most {limits.max_input_chars} characters")
        out.append({"role": m["role"], "content": m["content"]})
    if out[-1]["role"] == "assistant":
        raise InvalidParameterError("the last message must not be the assistant's: the model answers it")
    return out


def chat_completions(
    core: HubCore,
    token: TokenRecord | None,
    model: str,
    messages: Any,
    *,
    max_tokens: int = 256,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int | None = None,
    mixture: Any = None,
    on_text: TextFn | None = None,
) -> Future[dict[str, Any]]:
    """Answer a conversation (OpenAI ``/v1/chat/completions``; one choice), as a Future.

    The prompt is the base's chat template over ``messages`` with the assistant's turn opened;
    ``auto`` routes by the last user message.
    """
    limits = limits_of(core)
    chat = _check_messages(messages, limits)
    _check_sampling(max_tokens, temperature, top_p, seed, limits.max_new_tokens)
    last_user = next((m["content"] for m in reversed(chat) if m["role"] == "user" and m["content"].strip()), None)
    route_text = last_user or "\n".join(m["content"] for m in chat if m["content"].strip()) or "hello"
    target, served = _prepare(core, token, model, [route_text], mixture)
    lm = served.engine.lm
    prompt = _locked(lambda: lm.prompt_ids(chat))
    future = _queue(core, served, target, [prompt], [route_text], max_tokens=max_tokens, temperature=temperature,
                    top_p=top_p, seed=seed, on_text=on_text)
    created, rid = int(time.time()), f"chatcmpl-{uuid.uuid4().hex[:24]}"

    def response(generations: list[Any]) -> dict[str, Any]:
        g = generations[0]
        message = {"role": "assistant", "content": lm.decode(g.token_ids)}
        return {"id": rid, "object": "chat.completion", "created": created, "model": target.label,
                "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": g.finish_reason}],
                "usage": _usage(generations), **_routes(target)}

    return then(future, response)
