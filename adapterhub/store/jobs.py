"""Database operations on jobs (``orm_jobs``): insert, read, and every state change by compare-and-set.

A job's life: ``queued`` → ``running`` (``claim``: attempts + 1) → ``succeeded`` | ``failed``; or
``cancelled`` from ``queued`` or ``running``. Every change is one ``UPDATE ... WHERE`` on the state
the caller saw, and counts as done only when it touched one row:

- ``claim`` moves ``queued`` (or, for a takeover, ``running`` with the attempt number the caller
  read) to ``running`` and increments ``attempts``. Of two workers racing for one job, one wins.
- ``heartbeat``/``finish`` match ``status = 'running' AND attempts = :attempt``: the attempt number
  fences a worker that was given up on (stale heartbeat, requeued, taken over), so it can neither
  keep the job alive nor write a result over the attempt that replaced it.
- ``sweep_stale`` requeues (or fails, once its attempts are spent) a ``running`` job whose
  heartbeat is older than a limit: its worker died (the process of the local backend, a Ray node).

Timestamps are compared in Python: only ``running`` rows are scanned, and they are few.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from adapterhub.store.catalog import Catalog

__all__ = [
    "FINISHED",
    "JobRecord",
    "cancel_job",
    "claim_job",
    "count_jobs",
    "fail_job",
    "finish_job",
    "get_job",
    "heartbeat_job",
    "insert_job",
    "list_jobs",
    "prune_jobs",
    "sweep_stale",
]

FINISHED = ("succeeded", "failed", "cancelled")


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


@dataclass(frozen=True)
class JobRecord:
    """One job row, as read."""

    id: str
    kind: str
    owner: str
    params: dict[str, Any]
    status: str
    attempts: int
    max_attempts: int
    worker: str | None
    progress: dict[str, Any]
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    created: datetime
    started: datetime | None
    finished: datetime | None
    heartbeat: datetime | None

    @property
    def done(self) -> bool:
        return self.status in FINISHED

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (ISO-8601 times)."""
        return {
            "id": self.id, "kind": self.kind, "owner": self.owner, "params": self.params, "status": self.status,
            "attempts": self.attempts, "max_attempts": self.max_attempts, "worker": self.worker,
            "progress": self.progress, "result": self.result, "error": self.error, "created": _iso(self.created),
            "started": _iso(self.started), "finished": _iso(self.finished), "heartbeat": _iso(self.heartbeat),
        }


def _record(row: Any) -> JobRecord:
    return JobRecord(
        id=row.id, kind=row.kind, owner=row.owner, params=dict(row.params or {}), status=row.status,
        attempts=row.attempts, max_attempts=row.max_attempts, worker=row.worker, progress=dict(row.progress or {}),
        result=row.result, error=row.error, created=row.created, started=row.started, finished=row.finished,
        heartbeat=row.heartbeat,
    )


@contextmanager
def _session(catalog: Catalog) -> Iterator[Any]:
    """A read session (the ORM decodes JSON and UTC times on every backend)."""
    from sqlalchemy.orm import Session

    with Session(catalog.engine) as session:
        yield session


def _update(catalog: Catalog, job_id: str, where: dict[str, Any], values: dict[str, Any],
            status_in: tuple[str, ...] | None = None) -> bool:
    """``UPDATE jobs SET values WHERE id AND where...``; True when it touched the row (the CAS won)."""
    from sqlalchemy import update

    from adapterhub.store.orm_jobs import Job

    statement = update(Job).where(Job.id == job_id)
    for column, value in where.items():
        statement = statement.where(getattr(Job, column) == value)
    if status_in is not None:
        statement = statement.where(Job.status.in_(status_in))
    with catalog.transaction() as tx:
        return tx.session.execute(statement.values(**values)).rowcount == 1


def insert_job(catalog: Catalog, kind: str, owner: str, params: dict[str, Any], *, max_attempts: int = 3) -> JobRecord:
    """Queue a job; returns its row."""
    from adapterhub.store.orm_jobs import Job

    row = Job(id=uuid.uuid4().hex, kind=kind, owner=owner, params=params, status="queued", attempts=0,
              max_attempts=max_attempts, worker=None, progress={}, result=None, error=None, created=_now(),
              started=None, finished=None, heartbeat=None)
    with catalog.transaction() as tx:
        tx.session.add(row)
        tx.session.flush()
        return _record(row)


def get_job(catalog: Catalog, job_id: str) -> JobRecord | None:
    """The job, or None."""
    from adapterhub.store.orm_jobs import Job

    with _session(catalog) as session:
        row = session.get(Job, job_id)
        return _record(row) if row is not None else None


def list_jobs(catalog: Catalog, *, owner: str | None = None, status: str | None = None, kind: str | None = None,
              limit: int | None = 100) -> list[JobRecord]:
    """Jobs, newest first."""
    from sqlalchemy import select

    from adapterhub.store.orm_jobs import Job

    query = select(Job).order_by(Job.created.desc(), Job.id)
    if owner is not None:
        query = query.where(Job.owner == owner)
    if status is not None:
        query = query.where(Job.status == status)
    if kind is not None:
        query = query.where(Job.kind == kind)
    if limit is not None:
        query = query.limit(limit)
    with _session(catalog) as session:
        return [_record(row) for row in session.scalars(query)]


def count_jobs(catalog: Catalog, *, owner: str | None = None, statuses: tuple[str, ...] = ("queued", "running")) -> int:
    """How many jobs (of ``owner``) are in one of ``statuses``."""
    from sqlalchemy import func, select

    from adapterhub.store.orm_jobs import Job

    query = select(func.count()).select_from(Job).where(Job.status.in_(statuses))
    if owner is not None:
        query = query.where(Job.owner == owner)
    with _session(catalog) as session:
        return int(session.scalar(query) or 0)


def claim_job(catalog: Catalog, job: JobRecord, worker: str) -> bool:
    """Start attempt ``job.attempts + 1`` of a job read as ``queued`` (or ``running``, to take over a
    dead attempt); True if this caller won it."""
    now = _now()
    return _update(catalog, job.id, {"status": job.status, "attempts": job.attempts},
                   {"status": "running", "attempts": job.attempts + 1, "worker": worker, "started": now,
                    "heartbeat": now, "error": None})


def heartbeat_job(catalog: Catalog, job_id: str, attempt: int, progress: dict[str, Any] | None = None) -> bool:
    """Say attempt ``attempt`` is alive (and how far it is); False when it no longer owns the job
    (cancelled, or given up on and replaced)."""
    values: dict[str, Any] = {"heartbeat": _now()}
    if progress is not None:
        values["progress"] = progress
    return _update(catalog, job_id, {"status": "running", "attempts": attempt}, values)


def finish_job(catalog: Catalog, job_id: str, attempt: int, status: str, *, result: dict[str, Any] | None = None,
               error: dict[str, Any] | None = None, progress: dict[str, Any] | None = None) -> bool:
    """End attempt ``attempt`` as ``succeeded`` or ``failed``; False when it no longer owned the job."""
    if status not in ("succeeded", "failed"):
        raise ValueError(f"a job finishes as succeeded or failed, not {status!r}")
    values: dict[str, Any] = {"status": status, "result": result, "error": error, "finished": _now(),
                              "heartbeat": _now()}
    if progress is not None:
        values["progress"] = progress
    return _update(catalog, job_id, {"status": "running", "attempts": attempt}, values)


def fail_job(catalog: Catalog, job: JobRecord, error: dict[str, Any]) -> bool:
    """Fail a job as read (``queued`` or ``running`` at ``job.attempts``) without running it."""
    return _update(catalog, job.id, {"status": job.status, "attempts": job.attempts},
                   {"status": "failed", "error": error, "finished": _now()})


def cancel_job(catalog: Catalog, job_id: str) -> bool:
    """Cancel a queued or running job (a running one stops at its next heartbeat); False if it had ended."""
    return _update(catalog, job_id, {}, {"status": "cancelled", "finished": _now()}, status_in=("queued", "running"))


def sweep_stale(catalog: Catalog, stale_seconds: float) -> tuple[list[str], list[str]]:
    """Requeue each ``running`` job whose heartbeat is older than ``stale_seconds`` (its worker
    died), or fail it once its attempts are spent. Returns ``(requeued ids, failed ids)``."""
    from sqlalchemy import select

    from adapterhub.store.orm_jobs import Job

    limit = _now() - timedelta(seconds=stale_seconds)
    with _session(catalog) as session:
        stale = [_record(r) for r in session.scalars(select(Job).where(Job.status == "running"))
                 if r.heartbeat is None or r.heartbeat < limit]
    requeued: list[str] = []
    failed: list[str] = []
    for job in stale:
        where = {"status": "running", "attempts": job.attempts, "heartbeat": job.heartbeat}
        if job.attempts >= job.max_attempts:
            error = {"type": "WorkerLostError",
                     "message": f"the worker running this job stopped answering ({job.worker or 'unknown'}), "
                                f"and all {job.max_attempts} attempts are spent; resubmit it"}
            if _update(catalog, job.id, where, {"status": "failed", "error": error, "finished": _now()}):
                failed.append(job.id)
        elif _update(catalog, job.id, where, {"status": "queued", "worker": None}):
            requeued.append(job.id)
    return requeued, failed


def prune_jobs(catalog: Catalog, older_than_seconds: float) -> int:
    """Delete jobs that ended more than ``older_than_seconds`` ago; returns how many."""
    from sqlalchemy import delete

    from adapterhub.store.orm_jobs import Job

    cutoff = _now() - timedelta(seconds=older_than_seconds)
    with catalog.transaction() as tx:
        result = tx.session.execute(delete(Job).where(Job.status.in_(FINISHED), Job.finished < cutoff))
        return int(result.rowcount or 0)
