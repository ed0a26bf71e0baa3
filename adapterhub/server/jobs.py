"""``/v1/jobs``: long operations as jobs (``app/jobs``): ``202 Accepted`` + a job id, then poll.

``POST /v1/jobs`` (``{"kind", "params"}``) checks everything it can at once — the token may write,
the kind exists, the parameters are valid, the inputs exist and the token may read them, the
results' names are free and the token may write them — so bad input is a 4xx before anything is
queued; then the job is a row in the catalog, and any server process sharing the database (or a
Ray worker, with ``ADAPTERHUB_RAY_ADDRESS``) runs it. ``GET /v1/jobs/{id}`` says how far it is.

A job is visible only to the token that submitted it (anyone else gets the 404 of a missing job).
Each token may have ``per_owner`` jobs queued or running, the server ``max_pending`` (429 past
them). A failed job's error is the one-line message the CLI prints, with the HTTP status it would
have had and server paths taken out; an unexpected failure says only "internal error".
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from adapterhub import errors
from adapterhub.app.jobs import JobNotFoundError
from adapterhub.server.auth import bearer, hub_of, require_write
from adapterhub.server.errors import http_status

__all__ = ["JobNotFoundError", "JobRequest", "owner_of", "public_job", "router", "submit"]

router = APIRouter(prefix="/v1", tags=["jobs"])

PER_OWNER = 2  # queued + running jobs one token may have
MAX_PENDING = 8  # queued + running jobs the server takes in all


class JobRequest(BaseModel):
    """A job: its kind (``merge_batch``, ``quality``, ``transfer``, ``train_batch``, ``mhr``,
    ``shard_pack``) and the kind's parameters (``app/job_kinds``)."""

    model_config = ConfigDict(extra="forbid")

    kind: str = Field(..., max_length=64, description="merge_batch, quality, transfer, train_batch, mhr, shard_pack.")
    params: dict[str, Any] = Field(default_factory=dict, description="The kind's parameters.")


def owner_of(token: Any) -> str:
    """The owner a job of this token is recorded under."""
    return f"token:{token.id}" if token is not None else "anonymous"


def public_job(request: Request, job: Any) -> dict[str, Any]:
    """What a client sees of a job: no owner, errors as ``{"status", "message"}`` without server paths."""
    data = job.to_dict()
    data.pop("owner", None)
    data.pop("worker", None)
    error = data.get("error")
    if error is not None:
        cls = getattr(errors, str(error.get("type")), None)
        internal = not (isinstance(cls, type) and issubclass(cls, errors.AdapterHubError))
        message = "internal error" if error.get("type") == "InternalError" else str(error.get("message", ""))
        data["error"] = {"status": 500 if internal else http_status(cls),
                         "message": request.app.state.scrub_message(message)}
    data["url"] = f"{str(request.base_url).rstrip('/')}/v1/jobs/{job.id}"
    return data


def _limits(request: Request) -> tuple[int, int]:
    return getattr(request.app.state, "job_limits", (PER_OWNER, MAX_PENDING))


async def submit(request: Request, kind: str, params: dict[str, Any]) -> tuple[Any, JSONResponse]:
    """Check and queue a job for the caller's token; the job's row and the ``202`` answer."""
    hub = hub_of(request)
    token = await run_in_threadpool(require_write, request, None)
    per_owner, max_pending = _limits(request)
    job = await run_in_threadpool(
        lambda: hub.jobs.submit(kind, params, owner=owner_of(token), token=token, per_owner=per_owner,
                                max_pending=max_pending))
    body = public_job(request, job)
    body["job_id"] = job.id
    return job, JSONResponse(body, status_code=202, headers={"Location": body["url"]})


@router.post("/jobs", status_code=202)
async def create_job(spec: JobRequest, request: Request) -> JSONResponse:
    """Queue a job; ``202`` + ``{"id", "job_id", "url", "status", ...}``. Poll ``GET /v1/jobs/{id}``."""
    _, response = await submit(request, spec.kind, spec.params)
    return response


@router.get("/jobs")
async def list_jobs(request: Request, status: str | None = Query(None, max_length=16),
                    limit: int = Query(100, ge=1, le=1000)) -> list[dict[str, Any]]:
    """This token's jobs, newest first."""
    hub = hub_of(request)
    token = await run_in_threadpool(hub.check_token, bearer(request))
    jobs = await run_in_threadpool(lambda: hub.jobs.list(owner=owner_of(token), status=status, limit=limit))
    return [public_job(request, job) for job in jobs]


@router.get("/jobs/{job_id}")
async def job_status(job_id: str, request: Request) -> dict[str, Any]:
    """A job this token submitted: status, attempts, progress per stage, then its result or its error."""
    hub = hub_of(request)
    token = await run_in_threadpool(hub.check_token, bearer(request))
    job = await run_in_threadpool(lambda: hub.jobs.show(job_id, owner=owner_of(token)))
    return public_job(request, job)


@router.post("/jobs/{job_id}/cancel")
async def cancel_job(job_id: str, request: Request) -> dict[str, Any]:
    """Cancel a queued or running job of this token (a finished one is left as it is)."""
    hub = hub_of(request)
    token = await run_in_threadpool(hub.check_token, bearer(request))
    job = await run_in_threadpool(lambda: hub.jobs.cancel(job_id, owner=owner_of(token)))
    return public_job(request, job)


@router.delete("/jobs/{job_id}")
async def delete_job(job_id: str, request: Request) -> dict[str, Any]:
    """The same as ``POST /v1/jobs/{id}/cancel``."""
    return await cancel_job(job_id, request)
