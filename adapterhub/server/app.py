"""``create_app``: the FastAPI application of ``adapterhub serve``, and ``serve`` to run it.

Two faces over one ``AdapterHub`` facade:
- the hub routes that ``huggingface_hub`` and PEFT call (``HF_ENDPOINT=http://host:port``), in
  ``hub_routes``;
- a small REST API under ``/v1`` (list, search, show, lineage, merge on demand), in ``rest``;
  OpenAPI docs at ``/docs``.

Every expected error is an ``AdapterHubError``; one handler turns it into a JSON body
``{"error": message, "type": class}`` with the status and hub headers from the one table in
``adapterhub.server.errors``. Any other exception is a bug: a fixed 500 body, the traceback in the log.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from adapterhub.errors import AdapterHubError, InvalidParameterError
from adapterhub.hubformat import DEFAULT_MAX_UPLOAD_BYTES
from adapterhub.server import hub_routes, rest
from adapterhub.server.errors import error_response, internal_error_response

if TYPE_CHECKING:
    from adapterhub.app import AdapterHub

__all__ = ["create_app", "serve"]


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
        return internal_error_response()

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
