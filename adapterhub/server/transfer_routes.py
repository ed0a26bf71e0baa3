"""``POST /v1/transfer``: Trans-LoRA as a job (``app/jobs``, kind ``transfer``).

The request is checked at once — the token may read the source and write the result's name, the
names, bases, seeds and sizes are valid, the source has a transfer kit or seeds are given — so bad
input is a 4xx before any work; then the transfer is queued as a job and the answer is ``202``
with the job's URL (``GET /v1/jobs/{id}``, ``server/jobs``). The finished job's result is what
``adapterhub transfer --json`` prints.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from adapterhub.app.job_kinds import TransferParams
from adapterhub.server.jobs import submit

__all__ = ["TransferRequest", "router"]

router = APIRouter(prefix="/v1", tags=["rest"])


class TransferRequest(TransferParams):
    """Move a catalog adapter to another base (``AdapterHub.transfer``; the CLI's options)."""


@router.post("/transfer", status_code=202)
async def transfer(spec: TransferRequest, request: Request) -> JSONResponse:
    """Start a transfer job; ``202`` + ``{"job_id", "url", "name", "filtered"}``. Poll ``GET /v1/jobs/{job_id}``.

    The token must read the source and write the result's namespace (the token's own when
    ``new_name`` is omitted and it is not an operator token); the result is private when the source is.
    """
    job, _ = await submit(request, "transfer", spec.model_dump())
    url = f"{str(request.base_url).rstrip('/')}/v1/jobs/{job.id}"
    return JSONResponse({"job_id": job.id, "status": job.status, "url": url, "name": job.params["new_name"],
                         "filtered": job.params["filtered"]}, status_code=202, headers={"Location": url})
