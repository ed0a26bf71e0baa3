"""The GET pages: catalog, adapter, compare, compose, sign-in, and a job's progress.

Each page reads the caller's token from the sign-in cookie (``security.page_token``) and then
calls what the ``/v1`` routes call, with the same checks: ``authorize_read`` before anything about
one adapter, ``readable`` on every list, ``redact_show``/``redact_lineage`` on relatives. These
are plain ``def`` routes: FastAPI runs them in a worker thread, because the facade blocks.
Query parameters are read here, not by FastAPI's validation, so a bad one is a 4xx page that
says what to fix instead of a JSON body.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from adapterhub.app import catalog_views
from adapterhub.errors import AdapterHubError, InvalidParameterError
from adapterhub.server.auth import hub_of
from adapterhub.server.jobs import owner_of
from adapterhub.server.web import render, router
from adapterhub.server.web.graph import adapter_href, lineage_svg
from adapterhub.server.web.markdown import MAX_CARD_CHARS, render_card
from adapterhub.server.web.security import TOKEN_COOKIE, page_token

__all__ = ["ROUTERS", "adapter_choices", "job_view", "metric_rows"]

PAGE = 50  # catalog rows per page unless the URL asks for fewer or more (up to MAX_LIMIT)
MAX_LIMIT = 200
MAX_COMPARE = 8
MAX_CHOICES = 500  # adapters offered in the compare and compose selectors
ROUTERS = ("prototype", "learned", "hedged", "arrow")


def _param(request: Request, key: str, *, max_len: int = 200) -> str | None:
    """The last value of query parameter ``key``, stripped (None when absent or empty)."""
    values = request.query_params.getlist(key)
    if not values:
        return None
    value = values[-1].strip()
    if len(value) > max_len:
        raise InvalidParameterError(f"'{key}' is too long ({len(value)} characters; at most {max_len})")
    return value or None


def bounded_int(key: str, text: str | None, low: int, high: int) -> int | None:
    """``text`` as a whole number in ``[low, high]`` (None for none); a 4xx otherwise."""
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        raise InvalidParameterError(f"'{key}' must be a whole number, not '{text}'") from None
    if not low <= value <= high:
        raise InvalidParameterError(f"'{key}' must be between {low} and {high}")
    return value


def _int_param(request: Request, key: str, default: int, low: int, high: int) -> int:
    value = bounded_int(key, _param(request, key, max_len=12), low, high)
    return default if value is None else value


def _hidden_names(hub: Any, token: Any) -> set[str]:
    """Private repos this token may not read (their names must not shape any page)."""
    private = set(hub.hub_private_repos())
    return private - set(hub.readable(token, sorted(private), lambda n: n))


def adapter_choices(hub: Any, token: Any) -> list[str]:
    """Names offered in the compare and compose selectors: readable ones, by name."""
    page = hub.list_page(limit=MAX_CHOICES, visible=lambda rs: hub.readable(token, rs, lambda r: r.name))
    return [r.name for r in page.items]


def metric_rows(metrics: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per measured metric with its baseline beside it: ``zero_shot_<metric>`` of the same
    task and split (the base model without the adapter), and the gain over it."""
    groups: dict[tuple[str, str], dict[str, float]] = {}
    for m in metrics:
        groups.setdefault((m["task"], m["split"]), {})[m["metric"]] = m["value"]
    rows = []
    for (task, split), values in sorted(groups.items()):
        for metric, value in sorted(values.items()):
            if metric.startswith("zero_shot_") and metric.removeprefix("zero_shot_") in values:
                continue
            baseline = values.get(f"zero_shot_{metric}")
            rows.append({"task": task, "split": split, "metric": metric, "value": value, "baseline": baseline,
                         "gain": None if baseline is None else value - baseline})
    return rows


@router.get("/ui/")
def catalog(request: Request) -> HTMLResponse:
    """The catalog: search and filter by name, task, tag, base model; sort by name or a metric; paged."""
    hub = hub_of(request)
    token = page_token(request, hub)
    filters = {key: _param(request, key) for key in ("q", "task", "tag", "base_model")}
    sort = _param(request, "sort") or "name"
    limit = _int_param(request, "limit", PAGE, 1, MAX_LIMIT)
    facets = catalog_views.facets(hub, hidden=_hidden_names(hub, token))

    def visible(records: list[Any]) -> list[Any]:
        return hub.readable(token, records, lambda r: r.name)

    where = {"base_model": filters["base_model"], "task": filters["task"], "tag": filters["tag"], "query": filters["q"]}
    if sort == "name":
        cursor = _param(request, "cursor", max_len=1000)
        page = hub.list_page(**where, limit=limit, cursor=cursor, visible=visible)
        rows: list[tuple[Any, float | None]] = [(r, None) for r in page.items]
        more = {"cursor": page.next_cursor} if page.next_cursor else None
        deeper = cursor is not None
    else:
        if sort not in facets.metrics:
            known = ", ".join(facets.metrics) or "(no metric recorded yet)"
            raise InvalidParameterError(f"cannot sort by '{sort}': sort by name or by a metric: {known}")
        offset = _int_param(request, "offset", 0, 0, catalog_views.MAX_OFFSET)
        metric_page = catalog_views.metric_page(hub, sort, **where, limit=limit, offset=offset, visible=visible)
        rows = metric_page.items
        more = {"offset": str(metric_page.next_offset)} if metric_page.next_offset is not None else None
        deeper = offset > 0
    kept = {k: v for k, v in filters.items() if v}
    if sort != "name":
        kept["sort"] = sort
    if limit != PAGE:
        kept["limit"] = str(limit)
    return render(
        request, "catalog.html", token=token, rows=rows, filters=filters, sort=sort, facets=facets,
        next_url=f"/ui/?{urlencode({**kept, **more})}" if more else None,
        first_url=f"/ui/?{urlencode(kept)}" if deeper else None,
    )


def _read_card(snapshot: Any, hidden: set[str]) -> str | None:
    """The README of the revision; a card the hub generated (not uploaded) names the parents, so
    those the reader may not see are replaced by "(hidden)", as ``redact_show`` does."""
    readme = snapshot.files.get("README.md") if snapshot is not None else None
    if readme is None or readme.size > MAX_CARD_CHARS * 4:
        return None
    try:
        text = readme.read_small().decode("utf-8", errors="replace")
    except (OSError, AdapterHubError):
        return None
    if readme.content is not None:  # generated from the catalog entry
        for name in sorted(hidden, key=len, reverse=True):
            text = text.replace(name, "(hidden)")
    return text


@router.get("/ui/adapters/{namespace}/{name}")
def adapter_page(namespace: str, name: str, request: Request) -> HTMLResponse:
    """One adapter: model card, config summary, files, revisions, metrics with baselines, lineage graph."""
    hub = hub_of(request)
    token = page_token(request, hub)
    adapter_id = f"{namespace}/{name}"
    private = hub.authorize_read(token, adapter_id)  # a hidden repo answers as a missing one (404)
    shown = hub.redact_show(token, hub.show(adapter_id))
    tree = hub.redact_lineage(token, hub.lineage(adapter_id))
    try:
        snapshot = hub.hub_snapshot(adapter_id)
    except AdapterHubError:
        snapshot = None
    card = _read_card(snapshot, _hidden_names(hub, token))
    files = ([{"path": f.path, "size": f.size, "sha256": f.sha256} for f in snapshot.files.values()]
             if snapshot is not None else [{"path": "adapter_model.safetensors", "size": shown["size"],
                                            "sha256": shown["digest"]}])
    return render(
        request, "adapter.html", token=token, a=shown, private=private, files=files,
        card=render_card(card) if card else None, metrics=metric_rows(shown["metrics"]),
        graph=lineage_svg(tree, shown["children"]), revisions=list(reversed(shown["revisions"])),
    )


@router.get("/ui/compare")
def compare(request: Request) -> HTMLResponse:
    """Two or more adapters side by side: config, shared and own targets, metrics per task."""
    hub = hub_of(request)
    token = page_token(request, hub)
    names = list(dict.fromkeys(n.strip() for n in request.query_params.getlist("a") if n.strip()))
    if len(names) > MAX_COMPARE:
        raise InvalidParameterError(f"compare at most {MAX_COMPARE} adapters at once (got {len(names)})")
    if len(names) < 2:
        return render(request, "compare.html", token=token, adapters=[], names=names,
                      choices=adapter_choices(hub, token), shared=[], metric_table=[])
    adapters = []
    for adapter_id in names:
        hub.authorize_read(token, adapter_id)
        adapters.append(hub.redact_show(token, hub.show(adapter_id)))
    targets = [set(a["target_modules"]) for a in adapters]
    shared = sorted(set.intersection(*targets))
    for a, own in zip(adapters, targets):
        a["own_targets"] = sorted(own - set(shared))
        a["metric_map"] = {(r["task"], r["split"], r["metric"]): r for r in metric_rows(a["metrics"])}
    keys = sorted({key for a in adapters for key in a["metric_map"]})
    table = [{"task": t, "split": s, "metric": m, "cells": [a["metric_map"].get((t, s, m)) for a in adapters]}
             for t, s, m in keys]
    return render(request, "compare.html", token=token, adapters=adapters, names=names,
                  choices=adapter_choices(hub, token), shared=shared, metric_table=table)


def compose_context(hub: Any, token: Any, request: Request) -> dict[str, Any]:
    """What the compose page shows around its two forms (also after a route form was answered)."""
    selected = [n for n in request.query_params.getlist("a") if n.strip()]
    return {"choices": adapter_choices(hub, token), "selected": selected, "routers": ROUTERS, "among": [],
            "methods": ["auto", *[m["name"] for m in hub.methods()]]}


@router.get("/ui/compose")
def compose(request: Request) -> HTMLResponse:
    """The merge form (adapters, method, k, weights, name) and the route form (query -> mixture)."""
    hub = hub_of(request)
    token = page_token(request, hub)
    return render(request, "compose.html", token=token, routes=None, query_text="", **compose_context(hub, token, request))


@router.get("/ui/signin")
def signin_page(request: Request) -> HTMLResponse:
    """A form that takes a token (kept in an HttpOnly cookie: see ``security``)."""
    hub = hub_of(request)
    try:
        token = hub.check_token(request.cookies.get(TOKEN_COOKIE))
    except AdapterHubError:
        token = None
    return render(request, "signin.html", token=token, error=None, next=_param(request, "next", max_len=1000) or "")


def job_view(request: Request, job: Any) -> dict[str, Any]:
    """A job as its page and ``app.js`` show it: status, progress per stage, where it landed."""
    from adapterhub.server.jobs import public_job

    data = public_job(request, job)
    merges = (data.get("result") or {}).get("merges") or []
    landed = adapter_href(merges[-1]["name"]) if data["status"] == "succeeded" and merges else None
    stages = [{"stage": k, "done": v.get("done", 0), "total": v.get("total", 0), "message": v.get("message")}
              for k, v in (data.get("progress") or {}).items()]
    return {"id": data["id"], "status": data["status"], "done": job.done, "stages": stages,
            "error": (data.get("error") or {}).get("message"), "adapter_url": landed}


@router.get("/ui/jobs/{job_id}")
def job_page(job_id: str, request: Request) -> Response:
    """A running job's progress (``app.js`` polls it; without script the page refreshes itself);
    a finished merge lands on the new adapter's page."""
    hub = hub_of(request)
    token = page_token(request, hub)
    view = job_view(request, hub.jobs.show(job_id, owner=owner_of(token)))
    if view["adapter_url"]:
        return RedirectResponse(view["adapter_url"], status_code=303)
    return render(request, "job.html", token=token, job=view)


@router.get("/ui/jobs/{job_id}/status")
def job_status(job_id: str, request: Request) -> dict[str, Any]:
    """The job as JSON for ``app.js`` (only to the token that submitted it)."""
    hub = hub_of(request)
    token = page_token(request, hub)
    return job_view(request, hub.jobs.show(job_id, owner=owner_of(token)))
