"""The REST face under ``/v1``: list and search, show, lineage, and merge on demand.

Same facade, same errors as the CLI (``adapter_id``, ``base_model``, ``revision`` mean the same
thing in both). ``POST /v1/merge`` stores the merged adapter in the catalog, so its repo id is at
once pullable by any hub client (``snapshot_download``, ``PeftModel.from_pretrained``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from adapterhub.app.listing import MAX_PAGE
from adapterhub.server.auth import bearer, hub_of, require_read
from adapterhub.server.jobs import submit as submit_job
from adapterhub.server.merge_slots import MergeSlots, run_cancellable

__all__ = ["MergeRequest", "RouteRequest", "router"]

router = APIRouter(prefix="/v1", tags=["rest"])

REST_PAGE = 1000  # rows per /v1/adapters page unless the client asks for fewer (or more, up to MAX_PAGE)


class MergeRequest(BaseModel):
    """Compose a new adapter from catalog adapters (``AdapterHub.merge``)."""

    model_config = ConfigDict(extra="forbid")

    names: list[str] = Field(..., min_length=1, description="Input adapters, 'namespace/name'.")
    method: str = Field("lego", description="Merge method (see `adapterhub merge --help`).")
    k: int | None = Field(None, ge=1, description="Rank of the result (LEGO: number of clusters).")
    weights: list[float] | None = Field(None, description="One weight per input adapter.")
    params: dict[str, Any] = Field(default_factory=dict, description="Method parameters.")
    name: str | None = Field(None, description="Catalog name of the result; chosen by the hub if omitted.")
    seed: int | None = Field(None, description="Random seed (methods that cluster or sample); default 0.")


class RouteRequest(BaseModel):
    """Route queries to mixtures of catalog adapters (``AdapterHub.route``; the CLI's ``--json``)."""

    model_config = ConfigDict(extra="forbid")

    queries: list[str] = Field(..., min_length=1, max_length=256, description="Texts to route.")
    router: str = Field("prototype", description="prototype, learned, hedged (best on text alone) or arrow.")
    top_k: int = Field(3, ge=1, le=64, description="How many adapters each query mixes.")
    temperature: float = Field(1.0, gt=0, le=1000, description="Softmax temperature of the mixture.")
    among: list[str] | None = Field(None, max_length=1000, description="The inventory (default: every readable adapter).")
    labels: list[str] | None = Field(None, max_length=256, description="Candidate labels of the queries.")
    run: bool = Field(False, description="Also predict one of the labels under the routed mixture.")


@router.get("/health")
async def health() -> dict[str, str]:
    """Liveness check (async: it answers without a worker thread, even when all are busy)."""
    return {"status": "ok"}


@router.get("/adapters")
def list_adapters(
    request: Request,
    response: Response,
    task: str | None = None,
    tag: str | None = None,
    base_model: str | None = None,
    q: str | None = Query(None, description="Free text in name, task, tags, description."),
    limit: int | None = Query(None, ge=1, le=MAX_PAGE, description=f"Rows per page (default {REST_PAGE})."),
    cursor: str | None = Query(None, description="The next page: the cursor from the previous page's headers."),
) -> list[dict[str, Any]]:
    """One page of catalog entries matching every filter, by name (private repos only for tokens
    that may read them).

    Keyset pages (cheap at any depth, nothing counted): when more rows follow, the response has
    ``Link: <url>; rel="next"`` (the same query with ``cursor``) and ``X-Next-Cursor``. The body
    stays a plain list, so clients of the unpaged listing keep working on catalogs that fit one
    page. A malformed cursor is 422.
    """
    token = require_read(request)
    hub = hub_of(request)
    page = hub.list_page(
        base_model=base_model,
        task=task,
        tag=tag,
        query=q,
        limit=limit or REST_PAGE,
        cursor=cursor,
        visible=lambda records: hub.readable(token, records, lambda r: r.name),
    )
    if page.next_cursor is not None:
        rest = [(k, v) for k, v in request.query_params.multi_items() if k != "cursor"]
        next_url = request.url.replace(query=urlencode([*rest, ("cursor", page.next_cursor)]))
        response.headers["Link"] = f'<{next_url}>; rel="next"'
        response.headers["X-Next-Cursor"] = page.next_cursor
    return [r.to_dict() for r in page.items]


@router.get("/adapters/{namespace}/{name}")
def show_adapter(namespace: str, name: str, request: Request) -> dict[str, Any]:
    """One adapter: metadata, lineage rows, children, metrics, revisions (private relatives hidden)."""
    adapter_id = f"{namespace}/{name}"
    token = require_read(request, adapter_id)
    hub = hub_of(request)
    return hub.redact_show(token, hub.show(adapter_id))


@router.get("/adapters/{namespace}/{name}/lineage")
def adapter_lineage(namespace: str, name: str, request: Request) -> dict[str, Any]:
    """What an adapter was made from, recursively (private ancestors the caller cannot read hidden)."""
    adapter_id = f"{namespace}/{name}"
    token = require_read(request, adapter_id)
    hub = hub_of(request)
    return hub.redact_lineage(token, hub.lineage(adapter_id))


@router.post("/merge", response_model=None)
async def merge(spec: MergeRequest, request: Request) -> dict[str, Any] | Response:
    """Merge adapters into a new catalog entry; returns its repo id (pullable at once).

    The token must read every input and write the result's namespace (without ``name``, the result
    goes to the token's own namespace); the result is private when any input is. A token runs one
    merge at a time (429 otherwise), and a merge whose client disconnects stops storing nothing.
    With ``Prefer: respond-async`` (RFC 7240) the merge is queued as a job instead: ``202`` and the
    job's URL, as ``POST /v1/jobs`` answers (a merge of big adapters outlasts an HTTP timeout).
    """
    if "respond-async" in request.headers.get("prefer", "").lower():
        merge_spec = spec.model_dump(exclude_none=True)
        _, response = await submit_job(request, "merge_batch", {"merges": [merge_spec]})
        return response
    hub = hub_of(request)
    token = await run_in_threadpool(hub.check_token, bearer(request))
    namespace = await run_in_threadpool(hub.authorize_merge, token, spec.names, spec.name)
    slots: MergeSlots = request.app.state.merge_slots
    seed = {"seed": spec.seed} if spec.seed is not None else {}

    def run(check: Any) -> Any:
        return hub.merge(
            spec.names,
            method=spec.method,
            k=spec.k,
            weights=spec.weights,
            params=spec.params,
            name=spec.name,
            namespace=namespace,
            progress=lambda done, total, path: check(),
            **seed,
        )

    with slots.hold(f"token:{token.id}" if token is not None else "anonymous"):
        outcome = await run_cancellable(request, run)
    record = outcome.record
    base = str(request.base_url).rstrip("/")
    return {"repo_id": record.name, "revision": record.revision, "url": f"{base}/{record.name}", **outcome.to_dict()}


@router.post("/route")
async def route(spec: RouteRequest, request: Request) -> dict[str, Any]:
    """Which adapters, with which weights, for each query; ``{"routes": [...]}`` as the CLI prints.

    The inventory is ``among`` (every name must be readable by the caller) or every adapter the
    caller may read. Runs in a worker thread, one call per token at a time (429 otherwise), as merges.
    """
    hub = hub_of(request)
    token = await run_in_threadpool(require_read, request)
    if spec.among:
        for name in spec.among:
            await run_in_threadpool(hub.authorize_read, token, name)
        among = spec.among
    else:
        among = [r.name for r in hub.readable(token, hub.list(), lambda r: r.name)]
    slots: MergeSlots = request.app.state.merge_slots

    def run() -> list[dict[str, Any]]:
        decisions = hub.route(
            spec.queries, router=spec.router, top_k=spec.top_k, temperature=spec.temperature,
            among=among, labels=spec.labels, run=spec.run,
        )
        return [d.to_dict() for d in decisions]

    with slots.hold(f"token:{token.id}" if token is not None else "anonymous"):
        routes = await run_in_threadpool(run)
    return {"routes": routes}
