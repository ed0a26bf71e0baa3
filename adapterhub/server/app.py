"""``create_app``: the FastAPI application of ``adapterhub serve``, and ``serve`` to run it.

Two faces over one ``AdapterHub`` facade:
- the hub routes that ``huggingface_hub`` and PEFT call (``HF_ENDPOINT=http://host:port``), in
  ``hub_routes``;
- a small REST API under ``/v1`` (list, search, show, lineage, merge on demand), in ``rest``;
  OpenAPI docs at ``/docs``;
- web pages for people at ``/`` and ``/ui/...`` (catalog, adapter, compare, compose), in ``web``.

Every expected error is an ``AdapterHubError``; one handler turns it into a JSON body
``{"error": message, "type": class}`` with the status and hub headers from the one table in
``adapterhub.server.errors``, with any server file path (under the home or the temp folder)
replaced by a neutral word: a client learns what was wrong with its upload, not where the server
keeps it. Any other exception is a bug: a fixed 500 body, the traceback in the log. Every request
body is bounded and every response header cleaned by ``BodyLimitMiddleware`` (``bodylimit``).
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from adapterhub.errors import AdapterHubError, InvalidParameterError
from adapterhub.hubformat import DEFAULT_MAX_UPLOAD_BYTES, LFS_THRESHOLD
from adapterhub.server import (
    completion_routes,
    hub_listing,
    hub_routes,
    inference_routes,
    jobs,
    lfs,
    rest,
    transfer_routes,
    web,
    xet,
)
from adapterhub.server.bodylimit import MAX_BODY_BYTES, BodyLimitMiddleware
from adapterhub.server.errors import error_response, internal_error_response
from adapterhub.server.inference_routes import INFERENCE_PATHS, openai_error_body
from adapterhub.server.merge_slots import MergeSlots
from adapterhub.server.ratelimit import RateLimiter, RateLimitedError

if TYPE_CHECKING:
    from adapterhub.app import AdapterHub

__all__ = ["create_app", "serve"]

_PATH_TAIL = r"(?:/[^\s'\"`()<>:;,]*)?"


def _path_scrubber(home: Path | None) -> re.Pattern[str]:
    """A pattern matching absolute paths under the home or the temp folder (longest root first)."""
    roots = {tempfile.gettempdir(), str(Path(tempfile.gettempdir()).resolve())}
    if home is not None:
        roots |= {str(home), str(home.resolve())}
    alternatives = "|".join(re.escape(r) for r in sorted(roots, key=len, reverse=True) if r not in ("", "/"))
    return re.compile(f"(?:{alternatives})(?=[/\\s'\"`()<>:;,]|$){_PATH_TAIL}")


def _neutral_name(match: re.Match[str]) -> str:
    """What a client may know of a server path: which kind of storage it was."""
    parts = match.group(0).split("/")
    if "uploads" in parts:
        return "<uploaded file>"
    if "blobs" in parts:
        return "<blob store>"
    return "<server file>"


def _public(exc: AdapterHubError, scrubber: re.Pattern[str]) -> AdapterHubError:
    """``exc`` with server paths taken out of its message (the same class and fields otherwise).

    A copy, because the message is built in ``__init__`` by classes with different signatures
    (``BlobNotFoundError(digest, path)``, ``InvalidAdapterError(message, path=...)``).
    """
    message = str(exc)
    public = scrubber.sub(_neutral_name, message)
    if public == message:
        return exc
    clone = type(exc).__new__(type(exc))
    clone.__dict__.update(exc.__dict__)
    clone.args = (public,)
    return clone


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Start: hand the jobs queued in the catalog to this server's job backend (never fatal: a
    backend that is down must not stop the hub from serving). Stop: stop the backend."""
    import logging

    from fastapi.concurrency import run_in_threadpool

    jobs_service = getattr(app.state.hub, "jobs", None)
    if jobs_service is not None:
        try:
            await run_in_threadpool(jobs_service.resume)
        except Exception:  # noqa: BLE001
            logging.getLogger(__name__).exception("could not resume queued jobs")
    yield
    if jobs_service is not None:
        jobs_service.shutdown()


DEFAULT_RATE_LIMIT = 50.0  # inference requests per second per token (bursts of twice that)


def _openai_shaped(request: Request, response: JSONResponse, exc: AdapterHubError | None = None) -> JSONResponse:
    """The same answer with OpenAI's error body on the inference routes (and Retry-After on 429)."""
    headers = {k: v for k, v in response.headers.items() if k.lower().startswith("x-")}
    if isinstance(exc, RateLimitedError):
        headers["Retry-After"] = str(exc.retry_after)
    if not request.url.path.startswith(INFERENCE_PATHS):
        response.headers.update(headers)
        return response
    import json

    body = json.loads(response.body)
    return JSONResponse(openai_error_body(response.status_code, body.get("error", ""), body.get("type", "")),
                        status_code=response.status_code, headers=headers)


def create_app(
    hub: AdapterHub,
    *,
    read_token_required: bool = False,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    max_body_bytes: int = MAX_BODY_BYTES,
    merge_slots: MergeSlots | None = None,
    lfs_threshold: int | None = LFS_THRESHOLD,
    rate_limit: float = DEFAULT_RATE_LIMIT,
) -> FastAPI:
    """The server application over ``hub``.

    Args:
        hub: the facade every route calls.
        read_token_required: reads need a token too (writes always do).
        max_upload_bytes: most file bytes one commit may carry.
        max_body_bytes: most bytes of any other request body (JSON, YAML); 413 past it.
        merge_slots: how many merges run at once, per token and in all (default: one per token,
            one per core).
        lfs_threshold: files this large, and every ``*.safetensors``, are uploaded before the
            commit (LFS basic transfer, or Xet with ``hf_xet``) instead of inline; None: all inline.
        rate_limit: inference requests per second per token (0: no limit).

    Example:
        >>> import uvicorn                                     # doctest: +SKIP
        >>> uvicorn.run(create_app(AdapterHub()), port=8000)   # doctest: +SKIP
    """
    app = FastAPI(
        title="adapterhub",
        summary="A catalog of LoRA adapters, served as a Hugging Face-compatible hub and a REST API.",
        version="1",
        lifespan=_lifespan,
    )
    app.state.hub = hub
    app.state.read_token_required = read_token_required
    app.state.max_upload_bytes = max_upload_bytes
    app.state.merge_slots = merge_slots or MergeSlots()
    app.state.lfs_threshold = lfs_threshold
    app.state.rate_limiter = RateLimiter(rate_limit)
    scrubber = _path_scrubber(getattr(getattr(hub, "settings", None), "home", None))
    # jobs are catalog rows (``app/jobs``); this server runs them on its backend, picks up the
    # queued ones when it starts, and takes server paths out of their error messages
    app.state.jobs = getattr(hub, "jobs", None)
    app.state.scrub_message = lambda message: scrubber.sub(_neutral_name, message)
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes)

    @app.exception_handler(AdapterHubError)
    async def _handle(request: Request, exc: AdapterHubError) -> JSONResponse:
        return _openai_shaped(request, error_response(_public(exc, scrubber)), exc)

    @app.exception_handler(RecursionError)
    async def _handle_recursion(request: Request, exc: RecursionError) -> JSONResponse:
        # A safety net: bounded parsers refuse deep nesting first; any that slips through is the
        # client's deeply nested input, not a server bug.
        return _openai_shaped(request, error_response(InvalidParameterError("the request holds data nested too deeply")))

    @app.exception_handler(RequestValidationError)
    async def _handle_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body') or 'body'}: {e.get('msg')}" for e in exc.errors()
        )
        return _openai_shaped(request, error_response(InvalidParameterError(f"invalid request: {problems}")))

    @app.exception_handler(Exception)
    async def _handle_bug(request: Request, exc: Exception) -> JSONResponse:
        # Not an expected error: the traceback goes to the server log, the client gets JSON.
        return _openai_shaped(request, internal_error_response())

    app.include_router(rest.router)
    app.include_router(inference_routes.router)
    app.include_router(completion_routes.router)
    app.include_router(transfer_routes.router)
    app.include_router(jobs.router)
    app.include_router(hub_routes.router)
    app.include_router(lfs.router)
    app.include_router(xet.router)
    app.include_router(hub_listing.router)
    app.include_router(web.router)  # the web pages: ``/`` and ``/ui/...`` (static files at ``/ui/static``)
    return app


def serve(
    hub: AdapterHub,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    read_token_required: bool = False,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    lfs_threshold: int | None = LFS_THRESHOLD,
    log_level: str = "info",
    rate_limit: float = DEFAULT_RATE_LIMIT,
) -> None:
    """Run the server until interrupted (uvicorn, one process)."""
    import uvicorn

    app = create_app(
        hub, read_token_required=read_token_required, max_upload_bytes=max_upload_bytes, lfs_threshold=lfs_threshold,
        rate_limit=rate_limit,
    )
    config: dict[str, Any] = {"host": host, "port": port, "log_level": log_level}
    uvicorn.run(app, **config)
