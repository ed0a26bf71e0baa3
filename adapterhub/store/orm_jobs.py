"""ORM table of jobs: long operations (merge batches, quality tables, transfers) as catalog rows.

Why rows in the catalog and not a queue in memory: every server process and every worker that
shares the database sees the same jobs, so any of them may run any job, and a job outlives the
process that submitted it. A job's state moves only by compare-and-set (``store/jobs``): an
``UPDATE ... WHERE id = :id AND status = :expected AND attempts = :attempt`` that touched one row
is the only proof a worker owns the job, so two workers never both run one, and a worker that was
given up on (stale heartbeat) cannot overwrite the one that took over. Migration ``0005_jobs``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from adapterhub.store.orm import Base, UTCDateTime

__all__ = ["JOB_STATUSES", "Job"]

JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")


class Job(Base):
    """One submitted long operation and what is known about it so far."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(64))
    owner: Mapped[str] = mapped_column(String(255), index=True)
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), index=True)
    attempts: Mapped[int] = mapped_column(Integer)
    max_attempts: Mapped[int] = mapped_column(Integer)
    # where the current attempt runs ("host:pid"), for people and for tests that kill it
    worker: Mapped[str | None] = mapped_column(String(255))
    progress: Mapped[dict[str, Any]] = mapped_column(JSON)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    started: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished: Mapped[datetime | None] = mapped_column(UTCDateTime)
    heartbeat: Mapped[datetime | None] = mapped_column(UTCDateTime)
