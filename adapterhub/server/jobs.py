"""Long operations as jobs on the server: ``202 Accepted`` + a job id, then ``GET /v1/jobs/{id}``.

A transfer takes minutes (sampling, filtering, distillation), far longer than a client should hold
a request open. So the route checks everything it can at once (4xx before any work), then hands
the work to this runner and answers ``202`` with the job's URL. The runner is in-process and
bounded: a few worker threads (one by default: a transfer uses every core), a bounded queue
(``429`` past it) and a bounded history of finished jobs. A job is visible only to the token that
submitted it. A job's error is the same one-line message the CLI prints, with the HTTP status it
would have had; an unexpected failure says only "internal error" (the server log has the rest).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from adapterhub.errors import AdapterHubError, AdapterNotFoundError, TooManyRequestsError
from adapterhub.server.errors import http_status

log = logging.getLogger(__name__)


class JobNotFoundError(AdapterNotFoundError):
    """No job with this id (for this token)."""

    def __init__(self, job_id: str) -> None:
        self.name = job_id[:64]
        AdapterHubError.__init__(self, f"no job '{job_id[:64]}'; jobs are kept a while after they finish")

ProgressFn = Callable[[str, int, int], None]


@dataclass
class Job:
    """One submitted operation and what is known about it so far."""

    id: str
    kind: str
    owner: str
    status: str = "queued"  # queued | running | succeeded | failed
    progress: dict[str, dict[str, int]] = field(default_factory=dict)
    result: Any = None
    error: dict[str, Any] | None = None
    created: float = field(default_factory=time.time)
    finished: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "status": self.status, "progress": self.progress,
                "result": self.result, "error": self.error, "created": self.created, "finished": self.finished}


class JobRunner:
    """Runs jobs on a few worker threads; bounded queue, bounded history.

    Args:
        workers: jobs that run at once.
        max_pending: queued + running jobs the server accepts (429 beyond).
        per_owner: queued + running jobs one token may have.
        history: finished jobs kept for ``GET`` (oldest dropped first).
    """

    def __init__(self, *, workers: int = 1, max_pending: int = 8, per_owner: int = 2, history: int = 200,
                 public: Callable[[AdapterHubError], AdapterHubError] = lambda e: e) -> None:
        self._public = public  # takes server paths out of error messages (set by ``create_app``)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="adapterhub-job")
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self.max_pending, self.per_owner, self.history = max_pending, per_owner, history

    def _pending(self, owner: str | None = None) -> int:
        return sum(1 for j in self._jobs.values()
                   if j.status in ("queued", "running") and (owner is None or j.owner == owner))

    def submit(self, kind: str, owner: str, work: Callable[[ProgressFn], Any]) -> Job:
        """Queue ``work(progress)``; its return value becomes the job's result.

        Raises:
            TooManyRequestsError: the owner or the server has as many pending jobs as allowed.
        """
        with self._lock:
            if self._pending(owner) >= self.per_owner:
                raise TooManyRequestsError(f"this token already has {self.per_owner} jobs pending; wait for one to finish")
            if self._pending() >= self.max_pending:
                raise TooManyRequestsError(f"the server has {self.max_pending} jobs pending; try again later")
            job = Job(id=uuid.uuid4().hex, kind=kind, owner=owner)
            self._jobs[job.id] = job
            self._trim()
        self._pool.submit(self._run, job, work)
        return job

    def _trim(self) -> None:
        finished = [j.id for j in self._jobs.values() if j.status in ("succeeded", "failed")]
        for job_id in finished[: max(0, len(finished) - self.history)]:
            del self._jobs[job_id]

    def _run(self, job: Job, work: Callable[[ProgressFn], Any]) -> None:
        def progress(stage: str, done: int, total: int) -> None:
            job.progress[stage] = {"done": int(done), "total": int(total)}

        job.status = "running"
        try:
            job.result = work(progress)
            job.status = "succeeded"
        except AdapterHubError as e:
            job.error = {"status": http_status(type(e)), "message": str(self._public(e))}
            job.status = "failed"
        except Exception:  # noqa: BLE001 - a job must end in a state, whatever went wrong
            log.exception("job %s (%s) failed", job.id, job.kind)
            job.error = {"status": 500, "message": "internal error"}
            job.status = "failed"
        finally:
            job.finished = time.time()

    def get(self, job_id: str, owner: str) -> Job:
        """The job, if ``owner`` submitted it (anyone else gets the same 404 as for no job).

        Raises:
            AdapterNotFoundError: no such job for this owner.
        """
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None or job.owner != owner:
            raise JobNotFoundError(job_id)
        return job

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
