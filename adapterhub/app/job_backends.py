"""Where jobs run: a thread pool in this process (default), or a Ray cluster (``ADAPTERHUB_RAY_ADDRESS``).

A backend only carries a job id to a runner; the runner (``Jobs.run``) reads everything else from
the catalog. So a Ray worker needs only the same settings as the submitter (database URL, home,
blob URL), which the backend passes in the task's ``runtime_env``; it builds its own
``AdapterHub`` from them, once per worker process.

Ray is imported here only, and only when a Ray backend is made: importing the facade never
imports it. A Ray task is submitted with ``max_retries = max_attempts - 1`` and
``retry_exceptions=False``: Ray reruns it when the worker process or its node dies (a system
failure), never for an error the job raised (that is the job's answer, and it is in the row).
A task whose submitter exits is cancelled by Ray, so a process that submits to Ray waits for its
jobs (the CLI follows them; a server lives on).
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from adapterhub.errors import InvalidParameterError

if TYPE_CHECKING:
    from adapterhub.app.hub import AdapterHub

__all__ = ["LocalBackend", "RayBackend", "make_backend"]

log = logging.getLogger(__name__)

RAY_MAX_RETRIES = 2
"""Reruns of a Ray task whose worker died (so three attempts, as ``max_attempts`` defaults to)."""


class LocalBackend:
    """Jobs on a few threads of this process (one by default: a merge or an evaluation uses every core).

    Args:
        hub: the hub whose ``jobs.run`` runs each job.
        workers: jobs that run at once.
    """

    name = "local"

    def __init__(self, hub: AdapterHub, *, workers: int = 1) -> None:
        self.hub = hub
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="adapterhub-job")

    def submit(self, job_id: str) -> None:
        self._pool.submit(self._run, job_id)

    def _run(self, job_id: str) -> None:
        try:
            self.hub.jobs.run(job_id)
        except Exception:  # noqa: BLE001 - the row says what happened; never kill the pool thread
            log.exception("job %s could not be run", job_id)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


_WORKER_HUBS: dict[tuple[str, str], Any] = {}
_WORKER_LOCK = threading.Lock()


def run_in_worker(job_id: str, hub_class: type[AdapterHub]) -> str:
    """The body of the Ray task: run ``job_id`` with this worker's hub, a ``hub_class`` (the
    submitter's facade class, pickled by reference) built from the environment that the task's
    ``runtime_env`` set, once per process; returns the job's final status."""
    key = (os.environ.get("ADAPTERHUB_HOME", ""), os.environ.get("ADAPTERHUB_DATABASE_URL", ""))
    with _WORKER_LOCK:
        hub = _WORKER_HUBS.get(key)
        if hub is None:
            hub = _WORKER_HUBS[key] = hub_class()
    return hub.jobs.run(job_id, takeover=True).status


def worker_env(hub: AdapterHub) -> dict[str, str]:
    """The settings a worker needs to see the same catalog and blobs as ``hub``."""
    settings = hub.settings
    env = {"ADAPTERHUB_HOME": str(settings.home), "ADAPTERHUB_DATABASE_URL": settings.database_url}
    blob_url = getattr(settings, "blob_url", None)
    if blob_url:
        env["ADAPTERHUB_BLOB_URL"] = blob_url
    for name in ("ADAPTERHUB_JOB_HEARTBEAT_S", "ADAPTERHUB_BASES", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
                 "OMP_NUM_THREADS"):
        if os.environ.get(name):
            env[name] = os.environ[name]
    return env


class RayBackend:
    """Jobs as Ray tasks on the cluster at ``address`` (one CPU each).

    Args:
        hub: the submitting hub (its settings go to the workers).
        address: a Ray address (``host:port``, ``ray://host:port`` or ``auto``).
        max_retries: reruns of a task whose worker died.
    """

    name = "ray"

    def __init__(self, hub: AdapterHub, address: str, *, max_retries: int = RAY_MAX_RETRIES) -> None:
        try:
            import ray
        except ImportError:
            raise InvalidParameterError(
                f"ADAPTERHUB_RAY_ADDRESS is set ({address}) but Ray is not installed: "
                "pip install 'adapterhub[jobs]', or unset it to run jobs in this process") from None

        self.hub, self.address, self.max_retries = hub, address, max_retries
        self.env = worker_env(hub)
        if not ray.is_initialized():
            try:
                ray.init(address=address, runtime_env={"env_vars": self.env}, log_to_driver=False,
                         configure_logging=False)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise InvalidParameterError(
                    f"cannot reach the Ray cluster at ADAPTERHUB_RAY_ADDRESS={address} ({type(e).__name__}); "
                    "start it (`ray start --head`) or fix the address") from None
        self._remote = ray.remote(num_cpus=1)(run_in_worker)
        self.refs: dict[Any, str] = {}  # task result -> job id, until the task ends
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="adapterhub-ray-jobs", daemon=True)
        self._watcher.start()

    def submit(self, job_id: str) -> None:
        job = self.hub.jobs.show(job_id)
        retries = min(self.max_retries, max(0, job.max_attempts - 1))
        ref = self._remote.options(
            max_retries=retries, retry_exceptions=False, runtime_env={"env_vars": self.env}, name=f"job-{job.kind}",
        ).remote(job_id, type(self.hub))
        with self._lock:
            self.refs[ref] = job_id

    def _watch(self) -> None:
        """Fail the row of a task that Ray gave up on (retries spent, or it could not even start:
        a worker that cannot import adapterhub, a runtime env that cannot be set up), so the job
        does not wait for a stale-heartbeat sweep or stay queued for ever."""
        import ray

        from adapterhub.store import jobs as rows

        while not self._stop.wait(0.5):
            with self._lock:
                pending = list(self.refs)
            if not pending:
                continue
            try:
                ready, _ = ray.wait(pending, num_returns=len(pending), timeout=0)
            except Exception:  # noqa: BLE001 - the cluster went away: the rows go stale and are swept
                continue
            for ref in ready:
                with self._lock:
                    job_id = self.refs.pop(ref, None)
                try:
                    ray.get(ref)
                except Exception as e:  # noqa: BLE001 - any Ray failure ends the job's row
                    job = self.hub.jobs.show(job_id) if job_id else None
                    if job is not None and not job.done:
                        log.warning("job %s: its Ray task failed: %s", job_id, e)
                        rows.fail_job(self.hub.catalog, job, {
                            "type": "WorkerLostError",
                            "message": f"its Ray task failed after {job.attempts} attempt(s): {type(e).__name__}; "
                                       "the Ray worker logs say why; resubmit it"})

    def shutdown(self) -> None:
        self._stop.set()
        with self._lock:
            self.refs.clear()


def make_backend(hub: AdapterHub) -> LocalBackend | RayBackend:
    """A Ray backend when the hub's settings name a Ray cluster, else the local one."""
    address = getattr(hub.settings, "ray_address", None)
    return RayBackend(hub, address) if address else LocalBackend(hub)
