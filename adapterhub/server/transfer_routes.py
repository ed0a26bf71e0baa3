"""``POST /v1/transfer`` (Trans-LoRA as a job) and ``GET /v1/jobs/{id}``.

The request is checked at once — the token may read the source and write the result's name, the
names, bases, seeds and sizes are valid, the source has a transfer kit or seeds are given — so bad
input is a 4xx before any work; then the transfer runs as a job (``server/jobs``) and the answer is
``202`` with the job's URL. The finished job's result is what ``adapterhub transfer --json`` prints.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from adapterhub.server.auth import bearer, hub_of
from adapterhub.server.jobs import JobRunner

__all__ = ["TransferRequest", "router"]

router = APIRouter(prefix="/v1", tags=["rest"])


class TransferRequest(BaseModel):
    """Move a catalog adapter to another base (``AdapterHub.transfer``; the CLI's options)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., max_length=200, description="The source adapter, 'namespace/name'.")
    to_base: str = Field(..., max_length=200, description="Target base: mpnet, smollm2, minilm.")
    samples: int = Field(250, ge=1, le=5000, description="Synthetic inputs to distil on.")
    max_candidates: int | None = Field(None, ge=1, le=40_000, description="Generation budget (default 8 x samples).")
    seeds: list[str] | None = Field(None, min_length=1, max_length=32, description="Seed inputs (default: the kit's).")
    generator: str = Field("smollm2", max_length=200, description="The generator LM (a causal base).")
    new_name: str | None = Field(None, max_length=200, description="Name of the new adapter.")
    filter_rule: str = Field("top", pattern="^(top|threshold)$",
                             description="top (the most real-looking candidates) or threshold (p(real) > 0.5).")
    rank: int = Field(8, ge=1, le=64, description="Rank of the new adapter.")
    epochs: int = Field(2, ge=1, le=20, description="Distillation passes over the synthetic set.")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seeds sampling and the student.")


def _owner(token: Any) -> str:
    return f"token:{token.id}" if token is not None else "anonymous"


@router.post("/transfer", status_code=202)
async def transfer(spec: TransferRequest, request: Request) -> JSONResponse:
    """Start a transfer job; ``202`` + ``{"job_id", "url"}``. Poll ``GET /v1/jobs/{job_id}``.

    The token must read the source and write the result's namespace (the token's own when
    ``new_name`` is omitted and it is not an operator token); the result is private when the source is.
    """
    hub = hub_of(request)
    token = await run_in_threadpool(hub.check_token, bearer(request))
    namespace = await run_in_threadpool(hub.authorize_merge, token, [spec.name], spec.new_name)
    plan = await run_in_threadpool(
        hub.transfer_check, spec.name, to_base=spec.to_base, new_name=spec.new_name, namespace=namespace,
        samples=spec.samples, seeds=spec.seeds, generator=spec.generator)
    new_name = plan["name"]
    jobs: JobRunner = request.app.state.jobs

    def work(progress: Any) -> dict[str, Any]:
        return hub.transfer(spec.name, to_base=spec.to_base, samples=spec.samples, max_candidates=spec.max_candidates,
                            seeds=spec.seeds, generator=spec.generator, new_name=new_name,
                            filter_rule=spec.filter_rule, rank=spec.rank,
                            epochs=spec.epochs, seed=spec.seed, progress=progress)

    job = jobs.submit("transfer", _owner(token), work)
    url = f"{str(request.base_url).rstrip('/')}/v1/jobs/{job.id}"
    return JSONResponse({"job_id": job.id, "status": job.status, "url": url, "name": plan["name"],
                         "filtered": plan["filtered"]}, status_code=202, headers={"Location": url})


@router.get("/jobs/{job_id}")
async def job_status(job_id: str, request: Request) -> dict[str, Any]:
    """A job this token submitted: status, progress per stage, then its result or its error."""
    hub = hub_of(request)
    token = await run_in_threadpool(hub.check_token, bearer(request))
    jobs: JobRunner = request.app.state.jobs
    return jobs.get(job_id, _owner(token)).to_dict()
