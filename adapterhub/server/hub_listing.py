"""The hub routes for listing, history and deletion that ``huggingface_hub`` (2.x) calls.

Checked against what the installed client sends and reads (``hf_api.py``), and exercised by the
tests with the real client on loopback:

- ``GET    /api/models``                                  ``list_models``: ``search`` (substring of
  the id), ``author``, ``filter`` (tags, repeated), ``library``, ``limit``; pages of
  ``PAGE_SIZE`` with a ``Link: <…>; rel="next"`` header, which the client follows
- ``GET    /api/models/{ns}/{name}/commits/{rev}``        ``list_repo_commits``: newest first
- ``GET    /api/models/{ns}/{name}/refs``                 ``list_repo_refs``: one branch, ``main``
- ``DELETE /api/repos/delete``                            ``delete_repo`` (write access to the repo)

Private repos are left out of listings for callers who may not read them, and every per-repo
route answers them as missing (``require_read``), so a listing never reveals a private name.
Deleting and committing files goes through the commit route (``deletedFile``/``deletedFolder``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from adapterhub.errors import AdapterNotFoundError, AuthError, InvalidParameterError
from adapterhub.server.auth import hub_of, require_read, require_write
from adapterhub.server.hub_routes import _iso, _json_object

__all__ = ["PAGE_SIZE", "router"]

router = APIRouter(tags=["hub (huggingface_hub protocol)"])

PAGE_SIZE = 1000  # repos per page of list_models, as the HF hub pages them


def _int_param(request: Request, name: str) -> int | None:
    value = request.query_params.get(name)
    if value is None or value == "":
        return None
    if not value.isdigit():
        raise InvalidParameterError(f"'{name}' must be a whole number >= 0, not {value!r}")
    return int(value)


def _may_read(request: Request, repo_id: str) -> bool:
    """Whether the caller may read ``repo_id`` (a private repo it may not read is simply left out)."""
    try:
        require_read(request, repo_id)
    except (AuthError, AdapterNotFoundError):
        return False
    return True


def _model_item(s: Any) -> dict[str, Any]:
    return {
        "_id": s.repo_id,
        "id": s.repo_id,
        "modelId": s.repo_id,
        "author": s.repo_id.split("/", 1)[0],
        "sha": s.revision,
        "private": s.private,
        "gated": False,
        "disabled": False,
        "downloads": 0,
        "likes": 0,
        "library_name": "peft",
        "tags": list(s.tags),
        **({"createdAt": _iso(s.created)} if s.created else {}),
    }


def _next_link(request: Request, replace: dict[str, str]) -> str:
    """The ``Link`` header of the next page: the same query with ``replace`` swapped in."""
    rest = [(k, v) for k, v in request.query_params.multi_items() if k not in (*replace, "offset", "cursor")]
    return f'<{str(request.url.replace(query=urlencode([*rest, *replace.items()])))}>; rel="next"'


@router.get("/api/models")
def list_models(request: Request) -> JSONResponse:
    """Repos matching the filters, by id (``HfApi.list_models``); private ones only for their readers.

    Pages are keyset pages, as on the HF hub: ``Link: <…cursor=…>; rel="next"``, which the client
    follows; each costs the same however deep it is. ``offset`` (the links of older servers) still
    works, through the unpaged listing.
    """
    token = require_read(request)
    params = request.query_params
    limit = _int_param(request, "limit")
    if params.get("offset") and not params.get("cursor"):
        return _list_models_offset(request, limit)
    if limit == 0:
        return JSONResponse([])
    tags = [t for value in params.getlist("filter") for t in value.split(",") if t]
    hub = hub_of(request)
    size = PAGE_SIZE if limit is None else min(max(limit, 1), PAGE_SIZE)
    page = hub.hub_list_repos_page(
        search=params.get("search") or None,
        author=params.get("author") or None,
        tags=tags,
        library=params.get("library") or None,
        limit=size,
        cursor=params.get("cursor") or None,
        visible=lambda found: hub.readable(token, found, lambda s: s.repo_id),
    )
    headers = {}
    if page.next_cursor is not None and (limit is None or limit > size):
        replace = {"cursor": page.next_cursor, **({"limit": str(limit - size)} if limit is not None else {})}
        headers["Link"] = _next_link(request, replace)
    return JSONResponse([_model_item(s) for s in page.items], headers=headers)


def _list_models_offset(request: Request, limit: int | None) -> JSONResponse:
    """The pre-cursor listing, for ``offset`` links: reads every repo, then slices."""
    params = request.query_params
    offset = _int_param(request, "offset") or 0
    tags = [t for value in params.getlist("filter") for t in value.split(",") if t]
    found = hub_of(request).hub_list_repos(
        search=params.get("search") or None,
        author=params.get("author") or None,
        tags=tags,
        library=params.get("library") or None,
    )
    visible = [s for s in found if not s.private or _may_read(request, s.repo_id)]
    size = PAGE_SIZE if limit is None else min(limit, PAGE_SIZE)
    page = visible[offset : offset + size]
    headers = {}
    if offset + size < len(visible) and (limit is None or limit > size):
        replace = {"offset": str(offset + size), **({"limit": str(limit - size)} if limit is not None else {})}
        headers["Link"] = _next_link(request, replace)
    return JSONResponse([_model_item(s) for s in page], headers=headers)


@router.get("/api/models/{namespace}/{name}/commits/{revision:path}")
def list_commits(namespace: str, name: str, revision: str, request: Request) -> list[dict[str, Any]]:
    """The commits reachable from ``revision``, newest first (``HfApi.list_repo_commits``)."""
    repo_id = f"{namespace}/{name}"
    require_read(request, repo_id)
    history = hub_of(request).hub_commits(repo_id, revision)
    items = []
    for rev in history:
        title, _, body = rev.message.partition("\n")
        items.append(
            {"id": rev.revision, "title": title, "message": body.strip(), "authors": [], "date": _iso(rev.created)}
        )
    return items


@router.get("/api/models/{namespace}/{name}/refs")
def list_refs(namespace: str, name: str, request: Request) -> dict[str, Any]:
    """Branches and tags (``HfApi.list_repo_refs``): ``main`` at the head; no tags, converts or PRs."""
    repo_id = f"{namespace}/{name}"
    require_read(request, repo_id)
    head = hub_of(request).hub_head(repo_id)
    branches = [{"name": "main", "ref": "refs/heads/main", "targetCommit": head}] if head else []
    return {"branches": branches, "converts": [], "tags": [], "pullRequests": []}


@router.delete("/api/repos/delete")
async def delete_repo(request: Request) -> JSONResponse:
    """Delete a model repo and its history (``HfApi.delete_repo``); blobs go with the next ``gc``."""
    await run_in_threadpool(require_write, request, None)  # 401/403 before the body is read
    payload = await _json_object(request)
    return await run_in_threadpool(_delete_repo, request, payload)


def _delete_repo(request: Request, payload: dict[str, Any]) -> JSONResponse:
    repo_type = payload.get("type") or "model"
    if repo_type != "model":
        raise InvalidParameterError(f"this hub holds model repos (LoRA adapters) only, not {repo_type!r} repos")
    namespace, name = payload.get("organization"), payload.get("name")
    if not isinstance(namespace, str) or not namespace or not isinstance(name, str):
        raise InvalidParameterError("give the repo id as 'namespace/name' (this hub has no per-user namespace)")
    repo_id = f"{namespace}/{name}"
    require_write(request, repo_id)  # a missing or hidden repo: 404; another namespace: 403
    hub_of(request).hub_delete_repo(repo_id)
    return JSONResponse({"deleted": repo_id})
