"""OpenAI-compatible inference: ``/v1/embeddings``, ``/v1/classify``, ``/v1/models``.

The wire format is OpenAI's, so the ``openai`` client and ``curl`` examples work unchanged; the
``model`` field names an adapter, ``base``, ``auto`` or ``mixture`` (with the extra ``mixture``
field, ``{"ns/a": 0.7, "ns/b": 0.3}``; the openai client sends it with ``extra_body``). Errors on
these routes have OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``
(``openai_error_body``), which the app's handlers use for every path in ``INFERENCE_PATHS``.

Each route checks the token (read scope, as the other reads), takes one request from the caller's
rate bucket, resolves names in a worker thread, then awaits the batcher's future without holding
a thread: a thousand waiting requests cost a thousand small futures, not a thousand threads.
"""

from __future__ import annotations

import asyncio
import base64
import struct
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from adapterhub.server.auth import hub_of, require_read
from adapterhub.server.ratelimit import RateLimiter

__all__ = ["INFERENCE_PATHS", "openai_error_body", "router"]

router = APIRouter(prefix="/v1", tags=["inference"])

INFERENCE_PATHS = ("/v1/embeddings", "/v1/classify", "/v1/completions", "/v1/chat/completions", "/v1/models")
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 413: "invalid_request_error", 422: "invalid_request_error",
                429: "rate_limit_error", 503: "overloaded_error"}


def openai_error_body(status: int, message: str, error_type: str) -> dict[str, Any]:
    """OpenAI's error object for an answer of ``status`` (``error_type``: our error class name)."""
    code = "model_not_found" if status == 404 else error_type
    return {"error": {"message": message, "type": _ERROR_TYPES.get(status, "server_error"), "param": None,
                      "code": code}}


Model = str


class EmbeddingsRequest(BaseModel):
    """OpenAI's embeddings request, plus ``mixture``."""

    model_config = ConfigDict(extra="ignore")

    model: Model = Field(..., description="An adapter 'ns/name', 'base', a base ('minilm'), 'auto' or 'mixture'.")
    input: str | list[str] = Field(..., description="One text or a list of texts.")
    encoding_format: Literal["float", "base64"] = Field("float", description="Vectors as floats or base64 float32.")
    dimensions: int | None = Field(None, description="Not supported: the base's size is returned; leave unset.")
    user: str | None = None
    mixture: dict[str, float] | None = Field(None, description="With model 'mixture': adapter name -> weight.")


class ClassifyRequest(BaseModel):
    """Zero-shot classification under an adapter, a mixture or routing (adapterhub's own route)."""

    model_config = ConfigDict(extra="forbid")

    model: Model = Field(..., description="An adapter, 'base', a base, 'auto' or 'mixture'.")
    input: str | list[str] = Field(..., description="One text or a list of texts.")
    labels: list[str] = Field(..., description="Candidate labels (natural-language descriptions), 2 to 64.")
    mixture: dict[str, float] | None = Field(None, description="With model 'mixture': adapter name -> weight.")


def limiter_of(request: Request) -> RateLimiter:
    limiter: RateLimiter = request.app.state.rate_limiter
    return limiter


def caller_of(token: Any) -> str:
    """The rate bucket of a request: its token, or one shared bucket for anonymous callers."""
    return f"token:{token.id}" if token is not None else "anonymous"


async def authorized(request: Request) -> Any:
    token = await run_in_threadpool(require_read, request)
    limiter_of(request).check(caller_of(token))
    return token


async def answer(request: Request, start: Callable[[Any], Future[dict[str, Any]]]) -> dict[str, Any]:
    """Check the caller, start the work in a thread (catalog reads), await its result."""
    token = await authorized(request)
    future = await run_in_threadpool(start, token)
    return await asyncio.wrap_future(future)


def _base64_vector(values: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode("ascii")


@router.post("/embeddings")
async def create_embeddings(body: EmbeddingsRequest, request: Request) -> dict[str, Any]:
    """Embeddings under an adapter, a mixture, the base, or ``auto`` (routed per input; the
    response's ``routes`` then says which adapters each input used)."""
    from adapterhub.errors import InvalidParameterError

    if body.dimensions is not None:
        raise InvalidParameterError("'dimensions' is not supported: embeddings have the base model's size")
    hub = hub_of(request)
    result = await answer(request, lambda token: hub.serve_embeddings(token, body.model, body.input,
                                                                      mixture=body.mixture))
    if body.encoding_format == "base64":
        for item in result["data"]:
            item["embedding"] = _base64_vector(item["embedding"])
    return result


@router.post("/classify")
async def create_classification(body: ClassifyRequest, request: Request) -> dict[str, Any]:
    """Scores of each candidate label for each input: the cosine similarity of the input and the
    label, both embedded under the input's adapter or mixture; ``label`` is the best one."""
    hub = hub_of(request)
    return await answer(request, lambda token: hub.serve_classify(token, body.model, body.input, body.labels,
                                                                   mixture=body.mixture))


@router.get("/models")
async def list_models(request: Request) -> dict[str, Any]:
    """The servable models as OpenAI model objects: ``base``, ``auto``, ``mixture``, each base by
    its short name, and every adapter the token may read on a served base."""
    token = await authorized(request)
    hub = hub_of(request)
    return {"object": "list", "data": await run_in_threadpool(hub.serve_models, token)}


@router.get("/models/{namespace}/{name}")
async def show_adapter_model(namespace: str, name: str, request: Request) -> dict[str, Any]:
    """One adapter as an OpenAI model object (404 when unknown or unreadable)."""
    token = await authorized(request)
    hub = hub_of(request)
    return await run_in_threadpool(hub.serve_model, token, f"{namespace}/{name}")


@router.get("/models/{name}")
async def show_model(name: str, request: Request) -> dict[str, Any]:
    """A special model or a base as an OpenAI model object."""
    token = await authorized(request)
    hub = hub_of(request)
    return await run_in_threadpool(hub.serve_model, token, name)
