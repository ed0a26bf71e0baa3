"""Jobs: long operations as catalog rows, run in this process or on a Ray cluster.

``hub.jobs.submit(kind, params)`` checks the parameters against the catalog (a bad kind, a bad
parameter, a missing input or a taken name is an error now, before anything is queued), inserts a
``queued`` row and hands its id to the backend (``app/job_backends``): a thread pool in this
process by default, a Ray task when ``ADAPTERHUB_RAY_ADDRESS`` is set. Whoever runs it calls
``run(job_id)``, which needs nothing but the id: the parameters are in the row, the inputs in the
blob store and the results go through the catalog, so any process sharing the database can run
any job.

What holds, and how:
- One runner per job: the row moves ``queued`` → ``running`` by compare-and-set (``store/jobs``).
- Progress is reported back: the runner writes ``{stage: {done, total}}`` with a heartbeat every
  few seconds (``ADAPTERHUB_JOB_HEARTBEAT_S``, default 5).
- A job that dies is retried or failed: a ``running`` row whose heartbeat is older than four
  intervals lost its worker; ``sweep`` (called by ``list`` and on server start) requeues it, or
  fails it once ``max_attempts`` are spent. On Ray, Ray itself retries the task when the worker
  process or its node dies (``max_retries``); the retry waits until the dead attempt's heartbeat
  is stale and then takes the job over (attempt + 1; the dead attempt's writes no longer match).
- Nothing half-written becomes visible: each result is committed in one transaction by the
  operation the kind calls, and a retried kind skips what an earlier attempt stored
  (``app/job_kinds``).
- Cancel: the row becomes ``cancelled``; the runner notices at its next progress report or
  heartbeat and stops before storing anything more.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

from adapterhub.errors import AdapterHubError, AdapterNotFoundError, OperationCancelledError, TooManyRequestsError
from adapterhub.store import jobs as rows
from adapterhub.store.jobs import JobRecord

if TYPE_CHECKING:
    from adapterhub.app.hub import AdapterHub

__all__ = ["JobNotFoundError", "Jobs", "LOCAL_OWNER", "error_of"]

log = logging.getLogger(__name__)

LOCAL_OWNER = "local"
"""The owner of jobs submitted through the CLI or the Python API (the server uses the token)."""


class JobNotFoundError(AdapterNotFoundError):
    """No job with this id (for this owner)."""

    def __init__(self, job_id: str) -> None:
        self.name = job_id[:64]
        AdapterHubError.__init__(self, f"no job '{job_id[:64]}'; `adapterhub jobs list` shows the jobs there are")


def _env_seconds(name: str, default: float, minimum: float) -> float:
    value = (os.environ.get(name) or "").strip()
    try:
        return max(minimum, float(value)) if value else default
    except ValueError:
        return default


RETENTION_DAYS = 30.0
"""Finished jobs are deleted this many days after they end (``ADAPTERHUB_JOB_RETENTION_DAYS``)."""


def error_of(exc: BaseException) -> dict[str, Any]:
    """What a failed job keeps of its error: the message the CLI would print and the nearest class
    of ``adapterhub.errors`` (the server maps it to a status); an unexpected error says only
    "internal error" (its type and text go to the log and ``detail``, never to HTTP clients)."""
    if isinstance(exc, AdapterHubError):
        kind = next(c.__name__ for c in type(exc).__mro__ if c.__module__ == "adapterhub.errors")
        return {"type": kind, "message": str(exc)}
    return {"type": "InternalError", "message": "internal error", "detail": f"{type(exc).__name__}: {exc}"[:2000]}


class _Attempt:
    """One attempt at a job: progress state, the heartbeat thread, and whether it still owns the job."""

    def __init__(self, hub: AdapterHub, job: JobRecord, interval: float) -> None:
        self.hub, self.job_id, self.attempt, self.interval = hub, job.id, job.attempts, interval
        self.progress: dict[str, Any] = {}
        self.lost = threading.Event()
        self.stop = threading.Event()
        self._last_write = 0.0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._beat, name=f"adapterhub-heartbeat-{job.id[:8]}", daemon=True)

    def __enter__(self) -> _Attempt:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self._thread.join(timeout=10)

    def _write(self) -> None:
        with self._lock:
            snapshot = {k: dict(v) for k, v in self.progress.items()}
            self._last_write = time.monotonic()
        if not rows.heartbeat_job(self.hub.catalog, self.job_id, self.attempt, snapshot):
            self.lost.set()

    def _beat(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                self._write()
            except Exception:  # noqa: BLE001 - a database hiccup: the next beat tries again
                log.warning("job %s: heartbeat failed", self.job_id, exc_info=True)
            if self.lost.is_set():
                return

    def report(self, stage: str, done: int, total: int, message: str | None = None) -> None:
        """The progress callback given to the kind; raises once the job was cancelled or taken over."""
        if self.lost.is_set():
            raise OperationCancelledError("the job was cancelled (or another worker took it over); stopped")
        entry: dict[str, Any] = {"done": int(done), "total": int(total)}
        if message:
            entry["message"] = str(message)[:300]
        with self._lock:
            self.progress[stage] = entry
            due = time.monotonic() - self._last_write >= min(0.5, self.interval)
        if due or done == total:
            try:
                self._write()
            except Exception:  # noqa: BLE001 - a database hiccup must not fail the work; the heartbeat retries
                log.warning("job %s: progress write failed", self.job_id, exc_info=True)
            if self.lost.is_set():
                raise OperationCancelledError("the job was cancelled (or another worker took it over); stopped")


class Jobs:
    """The job service of one hub: submit, list, show, cancel, run; and its backend.

    Args:
        hub: the facade the jobs run against.

    Attributes:
        heartbeat_s: seconds between heartbeats of a running attempt (``ADAPTERHUB_JOB_HEARTBEAT_S``).
        stale_s: a running job without a heartbeat this long lost its worker (4 heartbeats).
    """

    def __init__(self, hub: AdapterHub) -> None:
        self.hub = hub
        self.heartbeat_s = _env_seconds("ADAPTERHUB_JOB_HEARTBEAT_S", 5.0, 0.05)
        self.stale_s = 4 * self.heartbeat_s
        self.retention_s = 86400 * _env_seconds("ADAPTERHUB_JOB_RETENTION_DAYS", RETENTION_DAYS, 0.0)
        self._janitor: threading.Thread | None = None
        self._janitor_stop = threading.Event()
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self._backend: Any = None
        self._backend_lock = threading.Lock()

    # ---------------------------------------------------------------- backend
    @property
    def backend(self) -> Any:
        """Where submitted jobs run: ``RayBackend`` with ``ray_address`` set, else ``LocalBackend``."""
        if self._backend is None:
            from adapterhub.app.job_backends import make_backend

            with self._backend_lock:
                if self._backend is None:
                    self._backend = make_backend(self.hub)
        return self._backend

    @backend.setter
    def backend(self, value: Any) -> None:
        self._backend = value

    def shutdown(self) -> None:
        """Stop the janitor and the backend (running local jobs finish; queued ones stay queued in the catalog)."""
        self._janitor_stop.set()
        if self._backend is not None:
            self._backend.shutdown()
            self._backend = None

    # ---------------------------------------------------------------- the API
    @staticmethod
    def kinds() -> dict[str, str]:
        """Every kind of job and what it does."""
        from adapterhub.app.job_kinds import JOB_KINDS  # lazy: pydantic models, ~50 ms

        return {name: kind.description for name, kind in JOB_KINDS.items()}

    def check(self, kind: str, params: dict[str, Any] | None, *, token: Any = None) -> dict[str, Any]:
        """Validate ``params`` of ``kind`` against the catalog; returns the parameters a job would store.

        ``token``: the server caller's token (its read and write rights are checked), None for a local caller.

        Raises:
            InvalidParameterError (unknown kind or parameter), AdapterNotFoundError,
            AdapterExistsError, AuthError, PermissionDeniedError.
        """
        from adapterhub.app.job_kinds import get_kind

        spec = get_kind(kind)
        return spec.check(self.hub, spec.parse(params), token)

    def submit(self, kind: str, params: dict[str, Any] | None = None, *, owner: str = LOCAL_OWNER, token: Any = None,
               max_attempts: int = 3, per_owner: int | None = None, max_pending: int | None = None,
               dispatch: bool = True) -> JobRecord:
        """Check, queue and dispatch a job; returns its row (``queued``, or further along already).

        Args:
            kind: a name of ``kinds()`` (``merge_batch``, ``quality``, ``transfer``, ``train_batch``,
                ``mhr``, ``shard_pack``; ``-`` for ``_`` too).
            params: the kind's parameters (``app/job_kinds``).
            owner: who may see and cancel it.
            token: the server caller's token (see ``check``).
            max_attempts: runs before a job whose worker keeps dying is failed.
            per_owner, max_pending: queued + running jobs allowed to ``owner`` and to everyone.
            dispatch: hand it to the backend now (False: it waits for ``run`` or a server).

        Raises:
            What ``check`` raises; TooManyRequestsError past the bounds.
        """
        from adapterhub.app.job_kinds import get_kind

        spec = get_kind(kind)
        stored = self.check(spec.name, params, token=token)
        if per_owner is not None and rows.count_jobs(self.hub.catalog, owner=owner) >= per_owner:
            raise TooManyRequestsError(f"this token already has {per_owner} jobs pending; wait for one to finish")
        if max_pending is not None and rows.count_jobs(self.hub.catalog) >= max_pending:
            raise TooManyRequestsError(f"the server has {max_pending} jobs pending; try again later")
        job = rows.insert_job(self.hub.catalog, spec.name, owner, stored, max_attempts=max(1, max_attempts))
        if dispatch:
            try:
                self.backend.submit(job.id)
            except Exception as e:  # the backend is unusable: the job ends now, saying why
                rows.fail_job(self.hub.catalog, job, error_of(e))
                raise
        return job

    def list(self, *, owner: str | None = None, status: str | None = None, kind: str | None = None,
             limit: int | None = 100) -> list[JobRecord]:
        """Jobs, newest first (running jobs whose worker died are requeued or failed first)."""
        self.sweep()
        return rows.list_jobs(self.hub.catalog, owner=owner, status=status, kind=kind, limit=limit)

    def show(self, job_id: str, *, owner: str | None = None) -> JobRecord:
        """One job (``owner``: only if theirs; anyone else gets the same error as for no job).

        Raises:
            JobNotFoundError.
        """
        job = rows.get_job(self.hub.catalog, job_id) if len(job_id) <= 64 else None
        if job is None or (owner is not None and job.owner != owner):
            raise JobNotFoundError(job_id)
        return job

    def cancel(self, job_id: str, *, owner: str | None = None) -> JobRecord:
        """Cancel a queued or running job (a running one stops at its next progress report);
        a finished job is left as it is. Returns the row after."""
        self.show(job_id, owner=owner)
        rows.cancel_job(self.hub.catalog, job_id)
        return self.show(job_id, owner=owner)

    def wait(self, job_id: str, *, timeout: float | None = None, poll: float = 0.2) -> JobRecord:
        """Poll until the job ends (or ``timeout`` seconds pass); returns its last row."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.show(job_id)
            if job.done or (deadline is not None and time.monotonic() >= deadline):
                return job
            time.sleep(poll)

    def sweep(self, *, dispatch: bool = False) -> tuple[list[str], list[str]]:
        """Requeue (or fail, when its attempts are spent) every running job whose heartbeat is
        stale; ``dispatch`` hands the requeued ones to this hub's backend. Returns (requeued, failed)."""
        requeued, failed = rows.sweep_stale(self.hub.catalog, self.stale_s)
        for job_id in requeued:
            log.warning("job %s lost its worker; requeued", job_id)
            if dispatch:
                self.backend.submit(job_id)
        return requeued, failed

    def resume(self, *, janitor: bool = True) -> int:
        """Sweep, then hand every queued job to this hub's backend (a server starting: jobs that
        were queued when the last one stopped, or queued without dispatch). Returns how many.

        ``janitor``: also start a thread that, every ``stale_s``, requeues the jobs whose worker
        died and runs them here, and once an hour deletes jobs finished ``retention_s`` ago
        (until ``shutdown``). A server does; several servers may: the rows decide who runs what.
        """
        self.sweep()
        queued = rows.list_jobs(self.hub.catalog, status="queued", limit=None)
        for job in reversed(queued):  # oldest first
            self.backend.submit(job.id)
        if janitor and self._janitor is None:
            self._janitor_stop.clear()
            self._janitor = threading.Thread(target=self._tend, name="adapterhub-job-janitor", daemon=True)
            self._janitor.start()
        return len(queued)

    def _tend(self) -> None:
        last_prune = 0.0
        while not self._janitor_stop.wait(max(1.0, self.stale_s)):
            try:
                self.sweep(dispatch=True)
                if time.monotonic() - last_prune > 3600:
                    rows.prune_jobs(self.hub.catalog, self.retention_s)
                    last_prune = time.monotonic()
            except Exception:  # noqa: BLE001 - the next round tries again
                log.warning("job janitor: a round failed", exc_info=True)
        self._janitor = None

    # ---------------------------------------------------------------- running one job
    def run(self, job_id: str, *, takeover: bool = False) -> JobRecord:
        """Run the job ``job_id`` here, if it is queued; returns its row after.

        ``takeover``: the caller knows an earlier attempt died (a Ray retry): a ``running`` row is
        waited on until its heartbeat is stale, then taken over. Without it a running job is left
        to its runner. A job whose attempts are spent is failed instead of run.
        """
        while True:
            job = self.show(job_id)
            if job.done:
                return job
            if job.status == "running":
                if not takeover:
                    return job
                age = time.time() - job.heartbeat.timestamp() if job.heartbeat else float("inf")
                if age < self.stale_s:
                    time.sleep(min(self.heartbeat_s, self.stale_s - age + 0.05))
                    continue
            if job.attempts >= job.max_attempts:
                rows.fail_job(self.hub.catalog, job, {
                    "type": "WorkerLostError",
                    "message": f"the job's worker died on each of its {job.max_attempts} attempts "
                               f"(last: {job.worker or 'unknown'}); resubmit it"})
                continue
            if rows.claim_job(self.hub.catalog, job, self.worker):
                break
        return self._execute(self.show(job_id))

    def _execute(self, job: JobRecord) -> JobRecord:
        from adapterhub.app.job_kinds import get_kind, stored_params

        kind = get_kind(job.kind)
        with _Attempt(self.hub, job, self.heartbeat_s) as attempt:
            try:
                result = kind.run(self.hub, stored_params(kind, job.params), attempt.report)
                status, error = "succeeded", None
            except Exception as e:  # noqa: BLE001 - a job must end in a state, whatever went wrong
                if not isinstance(e, AdapterHubError):
                    log.exception("job %s (%s) failed", job.id, job.kind)
                status, result, error = "failed", None, error_of(e)
        if not rows.finish_job(self.hub.catalog, job.id, job.attempts, status, result=result, error=error,
                               progress=attempt.progress):
            log.info("job %s: attempt %d no longer owns the job (cancelled or taken over)", job.id, job.attempts)
        return self.show(job.id)
