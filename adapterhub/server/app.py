"""``create_app``: the FastAPI application of ``adapterhub serve``, and ``serve`` to run it.

Two faces over one ``AdapterHub`` facade:
- the hub routes that ``huggingface_hub`` and PEFT call (``HF_ENDPOINT=http://host:port``), in
  ``hub_routes``;
- a small REST API under ``/v1`` (list, search, show, lineage, merge on demand), in ``rest``;
  OpenAPI docs at ``/docs``.

Every expected error is an ``AdapterHubError``; one handler turns it into a JSON body
``{"error": message, "type": class}`` with the status from ``adapterhub.errors.http_status_for``,
plus the ``X-Error-Code``/``X-Error-Message`` headers that hub clients read to raise their own
``RepositoryNotFoundError``, ``RevisionNotFoundError`` and ``EntryNotFoundError``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from adapterhub.errors import AdapterHubError, AdapterNotFoundError, InvalidParameterError, http_status_for
from adapterhub.store.hub import DEFAULT_MAX_UPLOAD_BYTES

if TYPE_CHECKING:
    from adapterhub.app import AdapterHub

__all__ = ["create_app", "serve"]


def _header_safe(text: str) -> str:
    """One line of latin-1, as HTTP headers must be."""
    line = " ".join(text.split())
    return line.encode("latin-1", errors="replace").decode("latin-1")[:1000]


def error_response(exc: AdapterHubError) -> JSONResponse:
    """The one mapping from an adapterhub error to an HTTP response."""
    message = str(exc)
    headers = {"X-Error-Message": _header_safe(getattr(exc, "hub_error_message", None) or message)}
    code = getattr(exc, "hub_error_code", None) or ("RepoNotFound" if isinstance(exc, AdapterNotFoundError) else None)
    if code:
        headers["X-Error-Code"] = code
    revision = getattr(exc, "revision", None)
    if code == "EntryNotFound" and revision:
        headers["X-Repo-Commit"] = revision
    return JSONResponse({"error": message, "type": type(exc).__name__}, status_code=http_status_for(exc), headers=headers)


def create_app(
    hub: AdapterHub,
    *,
    read_token_required: bool = False,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
) -> FastAPI:
    """The server application over ``hub``.

    Args:
        hub: the facade every route calls.
        read_token_required: reads need a token too (writes always do).
        max_upload_bytes: most file bytes one commit may carry.

    Example:
        >>> import uvicorn                                     # doctest: +SKIP
        >>> uvicorn.run(create_app(AdapterHub()), port=8000)   # doctest: +SKIP
    """
    from adapterhub.server import hub_routes, rest

    app = FastAPI(
        title="adapterhub",
        summary="A catalog of LoRA adapters, served as a Hugging Face-compatible hub and a REST API.",
        version="1",
    )
    app.state.hub = hub
    app.state.read_token_required = read_token_required
    app.state.max_upload_bytes = max_upload_bytes

    @app.exception_handler(AdapterHubError)
    async def _handle(request: Request, exc: AdapterHubError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _handle_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body') or 'body'}: {e.get('msg')}" for e in exc.errors()
        )
        return error_response(InvalidParameterError(f"invalid request: {problems}"))

    @app.exception_handler(Exception)
    async def _handle_bug(request: Request, exc: Exception) -> JSONResponse:
        # Not an expected error: the traceback goes to the server log, the client gets JSON.
        return JSONResponse({"error": "internal server error; see the server log", "type": "InternalError"}, 500)

    app.include_router(rest.router)
    app.include_router(hub_routes.router)
    return app


def serve(
    hub: AdapterHub,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    read_token_required: bool = False,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    log_level: str = "info",
) -> None:
    """Run the server until interrupted (uvicorn, one process)."""
    import uvicorn

    app = create_app(hub, read_token_required=read_token_required, max_upload_bytes=max_upload_bytes)
    config: dict[str, Any] = {"host": host, "port": port, "log_level": log_level}
    uvicorn.run(app, **config)
