"""The hub's web pages: browse, compare and compose adapters in a browser (``/`` and ``/ui/...``).

Server-rendered Jinja2 templates, plain HTML forms and one small script of our own (``app.js``:
it polls a running job and moves on to the new adapter's page), all shipped in this package:
no build step, no framework, nothing fetched at run time. Chosen because it is the simplest to
read and change (a page is one function here and one template), it works without JavaScript (a
job page also refreshes itself), and it lets the Content-Security-Policy forbid inline scripts
altogether, which matters because model cards are untrusted input.

The pages are one more face over the same facade calls as the ``/v1`` API (``list_page``,
``show``, ``lineage``, ``merge`` as a job, ``route``) with the same authorization: the caller's
token comes from an HttpOnly cookie instead of a header (``security``), private repos are
filtered with ``readable``/``redact_*`` exactly as in ``rest``. Adapter pages live under
``/ui/adapters/{namespace}/{name}`` so that no page can shadow a hub route (``/{ns}/{name}/resolve``,
``/api/...``, ``/v1/...``); ``/`` redirects to the catalog.

Every answer of these routes carries the security headers (``WebRoute``), and an expected error
becomes an HTML page with the API's status code (never a traceback); ``pages`` holds the GET
pages, ``forms`` the POSTs, ``graph`` the lineage SVG, ``markdown`` the card sanitiser.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Coroutine
from functools import lru_cache
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from adapterhub.errors import AdapterHubError, InvalidParameterError, InvalidTokenError
from adapterhub.server.errors import http_status
from adapterhub.server.web.graph import adapter_href
from adapterhub.server.web.security import SECURITY_HEADERS, TOKEN_COOKIE, clear_token, csrf_token

__all__ = ["STATIC_FILES", "WebRoute", "render", "router"]

HERE = Path(__file__).resolve().parent
STATIC_FILES = {"app.css": "text/css; charset=utf-8", "app.js": "text/javascript; charset=utf-8"}


@lru_cache(maxsize=1)
def _templates() -> Any:
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    env = Environment(
        loader=FileSystemLoader(HERE / "templates"), autoescape=True, trim_blocks=True, lstrip_blocks=True,
        undefined=StrictUndefined,  # a typo in a template is an error in tests, not an empty cell
    )
    env.globals.update(adapter_href=adapter_href, static=static_url)
    env.filters["size"] = human_size
    return env


@lru_cache(maxsize=None)
def _static(name: str) -> tuple[bytes, str]:
    data = (HERE / "static" / name).read_bytes()
    return data, hashlib.sha256(data).hexdigest()[:16]


def static_url(name: str) -> str:
    """URL of a static file, versioned by its content (so it may be cached for a year)."""
    return f"/ui/static/{name}?v={_static(name)[1]}"


def human_size(n: int | None) -> str:
    """Bytes for people: 1.2 MB."""
    if n is None:
        return ""
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


def render(request: Request, template: str, *, status: int = 200, token: Any = None, **context: Any) -> HTMLResponse:
    """A page: ``template`` with ``context``, the signed-in token's name and a CSRF token for forms."""
    csrf = csrf_token(request)
    body = _templates().get_template(template).render(request_path=request.url.path, me=token, csrf=csrf, **context)
    response = HTMLResponse(body, status_code=status)
    csrf_token(request, response)  # sets the cookie when this browser had none
    return response


def error_page(request: Request, exc: AdapterHubError) -> HTMLResponse:
    """The HTML answer to an expected error: the API's status, its message without server paths."""
    status = http_status(type(exc))
    scrub: Callable[[str], str] = getattr(request.app.state, "scrub_message", lambda m: m)
    try:  # the header still says who is signed in
        token = request.app.state.hub.check_token(request.cookies.get(TOKEN_COOKIE)) if request.cookies.get(TOKEN_COOKIE) else None
    except AdapterHubError:
        token = None
    response = render(request, "error.html", status=status, token=token, message=scrub(str(exc)),
                      status_code=status, kind=type(exc).__name__)
    if isinstance(exc, InvalidTokenError) and request.cookies.get(TOKEN_COOKIE):
        clear_token(response)  # a revoked token: sign the browser out rather than fail forever
    return response


class WebRoute(APIRoute):
    """A route of the web pages: security headers on every answer; expected errors, bad query
    parameters and HTTP errors become HTML error pages with the right status."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                response = await handler(request)
            except AdapterHubError as exc:
                response = await _in_thread(error_page, request, exc)
            except RequestValidationError as exc:
                problems = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors())
                response = await _in_thread(error_page, request, InvalidParameterError(f"invalid request: {problems}"))
            except HTTPException as exc:
                if exc.status_code >= 500:
                    raise
                error = InvalidParameterError(str(exc.detail))
                response = await _in_thread(error_page, request, error)
                response.status_code = exc.status_code
            for header, value in SECURITY_HEADERS.items():
                response.headers.setdefault(header, value)  # static files keep their Cache-Control
            return response

        return guarded


async def _in_thread(fn: Callable[..., HTMLResponse], *args: Any) -> HTMLResponse:
    from fastapi.concurrency import run_in_threadpool

    return await run_in_threadpool(fn, *args)


router = APIRouter(route_class=WebRoute, tags=["web"], include_in_schema=False)


@router.get("/")
def root() -> RedirectResponse:
    """The hub's front page is its catalog."""
    return RedirectResponse("/ui/", status_code=307)


@router.get("/ui/static/{name}")
def static(name: str) -> Response:
    """``app.css`` and ``app.js``, cacheable for a year (their URLs carry a content hash)."""
    if name not in STATIC_FILES:
        raise HTTPException(404, "no such file")
    data, _ = _static(name)
    return Response(data, media_type=STATIC_FILES[name], headers={"Cache-Control": "public, max-age=31536000, immutable"})


# the pages register their routes on ``router`` when imported
from adapterhub.server.web import forms, pages  # noqa: E402,F401  (after ``router`` exists)
