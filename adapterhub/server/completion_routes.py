"""OpenAI-compatible generation: ``/v1/completions`` and ``/v1/chat/completions``, streamed or not.

Same ``model`` choices and error shape as ``inference_routes``. With ``stream: true`` the answer
is server-sent events in OpenAI's chunk format, ending with ``data: [DONE]``: the engine thread
hands each text delta to the event loop (``call_soon_threadsafe``), and the response generator
sends it as soon as it arrives. Errors found before decoding starts (bad input, unknown adapter,
overload) are ordinary 4xx/503 answers; a failure after the stream began ends it with an error
event, as OpenAI's API does.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from adapterhub.errors import AdapterHubError, InvalidParameterError
from adapterhub.server.auth import hub_of
from adapterhub.server.inference_routes import answer, authorized

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["inference"])

_DONE = object()


class _Sampling(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(..., description="An adapter 'ns/name', 'base', 'smollm2', 'auto' or 'mixture'.")
    max_tokens: int | None = Field(None, description="Most tokens to generate (completions: 16, chat: 256).")
    temperature: float = Field(1.0, description="0: greedy; up to 2.")
    top_p: float = Field(1.0, description="Nucleus sampling mass.")
    seed: int | None = Field(None, description="Sampling seed (prompt i uses seed + i).")
    n: int = Field(1, description="Choices per prompt; only 1.")
    stop: str | list[str] | None = Field(None, description="Not supported: generation stops at end of turn.")
    stream: bool = Field(False, description="Answer as server-sent events.")
    mixture: dict[str, float] | None = Field(None, description="With model 'mixture': adapter name -> weight.")

    def service_kwargs(self, default_max_tokens: int) -> dict[str, Any]:
        """The sampling arguments of the facade's generation calls (after the checks it cannot make)."""
        if self.n != 1:
            raise InvalidParameterError("only n=1 is supported")
        if self.stop:
            raise InvalidParameterError("'stop' is not supported; generation ends at the end-of-turn token or max_tokens")
        return {"max_tokens": default_max_tokens if self.max_tokens is None else self.max_tokens,
                "temperature": self.temperature, "top_p": self.top_p, "seed": self.seed, "mixture": self.mixture}


class CompletionRequest(_Sampling):
    """OpenAI's completions request, plus ``mixture``."""

    prompt: str | list[str] = Field(..., description="One prompt or a list (at most 16).")


class ChatRequest(_Sampling):
    """OpenAI's chat completions request, plus ``mixture``."""

    messages: list[dict[str, Any]] = Field(..., description="The conversation: {role, content} objects.")


def _sse(payload: Any) -> bytes:
    return f"data: {json.dumps(payload) if payload != '[DONE]' else payload}\n\n".encode()


async def _stream(
    request: Request, start: Callable[[Any, Callable[[int, str], None]], Future[dict[str, Any]]],
    chunk: Callable[[int, str | None, str | None], dict[str, Any]], first: list[dict[str, Any]],
) -> StreamingResponse:
    """Start the work with a text callback feeding a queue; answer with its deltas as SSE."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    token = await authorized(request)

    def on_text(index: int, delta: str) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, (index, delta))

    future = await run_in_threadpool(start, token, on_text)
    future.add_done_callback(lambda f: loop.call_soon_threadsafe(queue.put_nowait, _DONE))

    async def events() -> AsyncIterator[bytes]:
        for payload in first:
            yield _sse(payload)
        while True:
            item = await queue.get()
            if item is _DONE:
                break
            yield _sse(chunk(item[0], item[1], None))
        try:
            result = future.result()
        except AdapterHubError as exc:
            yield _sse({"error": {"message": str(exc), "type": "server_error", "param": None, "code": type(exc).__name__}})
            return
        except Exception:  # a bug: the log has it, the client gets a fixed message
            yield _sse({"error": {"message": "internal server error", "type": "server_error", "param": None,
                                  "code": "InternalError"}})
            return
        for choice in result["choices"]:
            yield _sse(chunk(choice["index"], None, choice["finish_reason"]))
        yield _sse("[DONE]")

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


@router.post("/completions", response_model=None)
async def create_completion(body: CompletionRequest, request: Request) -> Any:
    """Continue each prompt under an adapter, a mixture, the base or ``auto``."""
    kwargs = body.service_kwargs(16)
    hub = hub_of(request)
    if not body.stream:
        return await answer(request, lambda token: hub.serve_completions(token, body.model, body.prompt, **kwargs))
    rid, created = f"cmpl-{uuid.uuid4().hex[:24]}", int(time.time())

    def chunk(index: int, text: str | None, finish: str | None) -> dict[str, Any]:
        return {"id": rid, "object": "text_completion", "created": created, "model": body.model,
                "choices": [{"index": index, "text": text or "", "logprobs": None, "finish_reason": finish}]}

    return await _stream(request, lambda token, on_text: hub.serve_completions(
        token, body.model, body.prompt, on_text=on_text, **kwargs), chunk, [])


@router.post("/chat/completions", response_model=None)
async def create_chat_completion(body: ChatRequest, request: Request) -> Any:
    """Answer a conversation under an adapter, a mixture, the base or ``auto`` (routed by the
    last user message)."""
    kwargs = body.service_kwargs(256)
    hub = hub_of(request)
    if not body.stream:
        return await answer(request, lambda token: hub.serve_chat(token, body.model, body.messages, **kwargs))
    rid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())

    def chunk(index: int, text: str | None, finish: str | None) -> dict[str, Any]:
        delta = {"content": text} if text is not None else {}
        return {"id": rid, "object": "chat.completion.chunk", "created": created, "model": body.model,
                "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}]}

    first = [{"id": rid, "object": "chat.completion.chunk", "created": created, "model": body.model,
              "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                           "finish_reason": None}]}]
    return await _stream(request, lambda token, on_text: hub.serve_chat(
        token, body.model, body.messages, on_text=on_text, **kwargs), chunk, first)
