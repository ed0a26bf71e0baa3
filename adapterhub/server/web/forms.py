"""The POST forms: sign in, sign out, merge (as a job), route.

Every form is checked for this browser's CSRF token before anything else (``security``). Forms
are ``application/x-www-form-urlencoded`` and parsed here with the standard library (bounded: the
server's body limit, then at most ``MAX_FIELDS`` fields), so the pages need no multipart package.

A merge is a ``merge_batch`` job, as ``POST /v1/jobs`` queues it, checked the same way (the token
may write, may read every input, may write the result's namespace) before it is queued; the
browser then lands on the job's page, which follows the progress and moves on to the new
adapter. A route runs at once, like ``POST /v1/route``, in a worker thread and one call per token.
"""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import parse_qs

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from adapterhub.errors import AdapterHubError, InvalidParameterError
from adapterhub.server.auth import hub_of
from adapterhub.server.jobs import MAX_PENDING, PER_OWNER, owner_of
from adapterhub.server.web import render, router
from adapterhub.server.web.pages import ROUTERS, bounded_int, compose_context
from adapterhub.server.web.security import check_csrf, clear_token, page_token, set_token

__all__ = ["MAX_FIELDS", "read_form"]

MAX_FIELDS = 300
MAX_QUERIES = 32
Form = dict[str, list[str]]


async def read_form(request: Request) -> Form:
    """The urlencoded form of a POST, with its CSRF token checked.

    Raises:
        InvalidParameterError: not a urlencoded form, not UTF-8, or too many fields.
        CsrfError: the CSRF token is missing or wrong, or another origin sent the form.
    """
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise InvalidParameterError("send the form as application/x-www-form-urlencoded (use the page's form)")
    body = await request.body()
    try:
        form = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False, max_num_fields=MAX_FIELDS)
    except UnicodeDecodeError:
        raise InvalidParameterError("the form is not UTF-8") from None
    except ValueError:
        raise InvalidParameterError(f"the form has more than {MAX_FIELDS} fields") from None
    check_csrf(request, form)
    return form


def _field(form: Form, key: str, *, max_len: int = 200) -> str | None:
    value = (form.get(key) or [""])[-1].strip()
    if len(value) > max_len:
        raise InvalidParameterError(f"'{key}' is too long (at most {max_len} characters)")
    return value or None


def _int_field(form: Form, key: str, low: int, high: int) -> int | None:
    return bounded_int(key, _field(form, key, max_len=12), low, high)


def _weights(text: str | None, n: int) -> list[float] | None:
    """``"0.5, 0.25"`` (commas or spaces) as floats, one per input adapter."""
    if text is None:
        return None
    try:
        weights = [float(w) for w in text.replace(",", " ").split()]
    except ValueError:
        raise InvalidParameterError(f"weights must be numbers separated by commas, not '{text}'") from None
    if not all(math.isfinite(w) for w in weights):
        raise InvalidParameterError("weights must be finite numbers")
    if len(weights) != n:
        raise InvalidParameterError(f"give one weight per adapter: {n} adapters, {len(weights)} weights")
    return weights


def _next_page(value: str | None) -> str:
    """Where to go after signing in: a path of this site only (no ``//host`` or scheme)."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value and "\n" not in value:
        return value
    return "/ui/"


@router.post("/ui/signin")
async def signin(request: Request) -> Response:
    """Check the token and keep it in the sign-in cookie; a wrong one is the form again, with a 401."""
    form = await read_form(request)
    hub = hub_of(request)
    secret = _field(form, "token", max_len=500)
    try:
        token = await run_in_threadpool(hub.check_token, secret) if secret else None
    except AdapterHubError:
        token = None
    if token is None:
        return await run_in_threadpool(lambda: render(
            request, "signin.html", status=401, token=None, next=_field(form, "next", max_len=1000) or "",
            error="That token is unknown or was revoked. Create one with `adapterhub token create` on the server."))
    response = RedirectResponse(_next_page(_field(form, "next", max_len=1000)), status_code=303)
    assert secret is not None
    set_token(request, response, secret)
    return response


@router.post("/ui/signout")
async def signout(request: Request) -> RedirectResponse:
    """Forget the token in this browser."""
    await read_form(request)
    response = RedirectResponse("/ui/", status_code=303)
    clear_token(response)
    return response


@router.post("/ui/merge")
async def merge(request: Request) -> RedirectResponse:
    """Queue a merge of the chosen adapters (a ``merge_batch`` job); 303 to the job's page."""
    form = await read_form(request)
    hub = hub_of(request)
    token = await run_in_threadpool(page_token, request, hub)
    await run_in_threadpool(hub.authorize_write, token, None)  # 401 signed out, 403 read-only
    names = list(dict.fromkeys(n.strip() for n in form.get("a", []) if n.strip()))
    if len(names) < 2:
        raise InvalidParameterError("choose two or more adapters to merge")
    spec: dict[str, Any] = {
        "names": names,
        "method": _field(form, "method", max_len=64) or "lego",
        "k": _int_field(form, "k", 1, 4096),
        "weights": _weights(_field(form, "weights", max_len=2000), len(names)),
        "name": _field(form, "name", max_len=200),
    }
    per_owner, max_pending = getattr(request.app.state, "job_limits", (PER_OWNER, MAX_PENDING))
    job = await run_in_threadpool(lambda: hub.jobs.submit(
        "merge_batch", {"merges": [spec]}, owner=owner_of(token), token=token, per_owner=per_owner,
        max_pending=max_pending))
    return RedirectResponse(f"/ui/jobs/{job.id}", status_code=303)


@router.post("/ui/route")
async def route(request: Request) -> HTMLResponse:
    """Route the queries (one per line) over the chosen adapters (``among``; default: every one
    the caller may read); the compose page again, with each query's adapters and weights."""
    form = await read_form(request)
    hub = hub_of(request)
    token = await run_in_threadpool(page_token, request, hub)
    text = _field(form, "queries", max_len=20_000) or ""
    queries = [q.strip() for q in text.splitlines() if q.strip()]
    if not queries:
        raise InvalidParameterError("write at least one query (one per line)")
    if len(queries) > MAX_QUERIES:
        raise InvalidParameterError(f"route at most {MAX_QUERIES} queries at once")
    router_name = _field(form, "router", max_len=32) or "prototype"
    if router_name not in ROUTERS:
        raise InvalidParameterError(f"unknown router '{router_name}'; choose one of {', '.join(ROUTERS)}")
    top_k = _int_field(form, "top_k", 1, 64) or 3

    chosen = list(dict.fromkeys(n.strip() for n in form.get("among", []) if n.strip()))

    def run() -> list[dict[str, Any]]:
        if chosen:  # every chosen name must be readable (a hidden one answers as missing)
            for name in chosen:
                hub.authorize_read(token, name)
            among = chosen
        else:
            among = [r.name for r in hub.readable(token, hub.list(), lambda r: r.name)]
        with request.app.state.merge_slots.hold(f"token:{token.id}" if token is not None else "anonymous"):
            return [d.to_dict() for d in hub.route(queries, router=router_name, top_k=top_k, among=among)]

    routes = await run_in_threadpool(run)
    context = await run_in_threadpool(compose_context, hub, token, request)
    context["among"] = chosen
    return await run_in_threadpool(lambda: render(request, "compose.html", token=token, routes=routes,
                                                  query_text=text, **context))
