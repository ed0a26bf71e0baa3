"""Jobs on a real local Ray cluster: a head (no CPUs) and one worker node (one CPU) on loopback.

The cluster is started with ``ray start --block`` in process groups of their own (so the fixture
stops exactly these processes, never another Ray on the machine) and a short temp dir (Ray's
socket paths have a length limit). The hub submits through ``ADAPTERHUB_RAY_ADDRESS``; the worker
builds its own hub from the settings that the task's ``runtime_env`` carries and writes through
the same catalog: a SQLite file, or PostgreSQL when ``ADAPTERHUB_TEST_POSTGRES_URL`` is set.

Checked: a merge batch and a small quality grid run on the worker; killing the worker process
in the middle of a batch makes Ray retry the task, the retry takes the job over once the dead
attempt's heartbeat is stale (attempt 2), skips the merges already stored and finishes, and the
catalog holds each result exactly once with every blob intact.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("ray")

from adapterhub.app import AdapterHub  # noqa: E402
from tests.helpers import PG_ENV, postgres_database, random_adapter  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

RAY = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
if RAY is None:
    pytest.skip("the `ray` command is not installed", allow_module_level=True)
NAMES = ("acme/a", "acme/b", "acme/c")
HEARTBEAT_S = 0.5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(process: subprocess.Popen) -> None:
    """Stop one ``ray start --block`` and every process it started (its process group)."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


class Cluster:
    """A running local cluster: its address and the worker node's ``ray start`` process."""

    def __init__(self, temp: str, env: dict[str, str]) -> None:
        self.temp, self.env = temp, env
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.processes: list[subprocess.Popen] = []

    def _start(self, *args: str) -> subprocess.Popen:
        log = open(Path(self.temp) / f"start-{len(self.processes)}.log", "wb")  # noqa: SIM115 - kept open
        process = subprocess.Popen([RAY, "start", *args, "--block", "--disable-usage-stats",
                                    "--object-store-memory=100000000"],
                                   env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.processes.append(process)
        return process

    def start(self) -> None:
        self._start("--head", f"--port={self.port}", "--node-ip-address=127.0.0.1", "--num-cpus=0",
                    "--include-dashboard=false", f"--temp-dir={self.temp}")
        deadline = time.monotonic() + 60
        while True:  # the GCS answers on the port once the head is up
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the Ray head did not start"
                time.sleep(0.2)
        self.worker = self._start(f"--address={self.address}", "--node-ip-address=127.0.0.1", "--num-cpus=1")
        import ray

        ray.init(address=self.address, log_to_driver=False, configure_logging=False)
        while ray.cluster_resources().get("CPU", 0) < 1:
            assert time.monotonic() < deadline + 60, "the Ray worker node did not join"
            time.sleep(0.2)

    def stop(self) -> None:
        import ray

        ray.shutdown()
        for process in reversed(self.processes):
            _stop(process)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    temp = tempfile.mkdtemp(prefix="ahray", dir="/tmp")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_TMPDIR": temp, "ADAPTERHUB_JOB_HEARTBEAT_S": str(HEARTBEAT_S)}
    env.pop("ADAPTERHUB_RAY_ADDRESS", None)
    running = Cluster(temp, env)
    try:
        running.start()
        yield running
    finally:
        running.stop()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture
def database_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """PostgreSQL when ``ADAPTERHUB_TEST_POSTGRES_URL`` is set (a fresh database), else the home's SQLite file."""
    if not os.environ.get(PG_ENV):
        yield None
        return
    with postgres_database(request.getfixturevalue("postgres_admin")) as url:
        yield url


@pytest.fixture
def hub(cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        database_url: str | None) -> Iterator[AdapterHub]:
    monkeypatch.setenv("ADAPTERHUB_RAY_ADDRESS", cluster.address)
    monkeypatch.setenv("ADAPTERHUB_JOB_HEARTBEAT_S", str(HEARTBEAT_S))
    monkeypatch.delenv("ADAPTERHUB_DATABASE_URL", raising=False)
    with AdapterHub(tmp_path / "home", database_url) as h:
        for seed, name in enumerate(NAMES):
            h.add_adapter(random_adapter(seed, rank=16, layers=24, d=1024), name)
        yield h
        h.jobs.shutdown()


def _batch(n: int) -> dict:
    """``n`` lego merges of the three inputs, distinct by seed; the last two get derived names."""
    merges = [{"names": list(NAMES), "method": "lego", "k": 16, "seed": i,
               **({"name": f"acme/m{i}"} if i < n - 2 else {})} for i in range(n)]
    return {"merges": merges}


def _consistent(hub: AdapterHub, results: list[dict]) -> None:
    """Each result stored once, with its lineage; no other entries; every blob there and intact."""
    names = sorted(r.name for r in hub.list())
    assert names == sorted([*NAMES, *(m["name"] for m in results)])
    assert len(set(names)) == len(names)
    for merge in results:
        assert hub.get(merge["name"]).digest == merge["digest"]
        assert sorted(p.parent_name for p in hub.catalog.lineage(merge["name"])) == sorted(NAMES)
    assert hub.verify() == {"missing": [], "corrupt": []}


def test_a_merge_batch_runs_on_the_ray_worker(hub):
    assert hub.jobs.backend.name == "ray"
    job = hub.jobs.submit("merge_batch", _batch(4))
    done = hub.jobs.wait(job.id, timeout=180)
    assert done.status == "succeeded", done.error
    assert done.attempts == 1 and not done.worker.endswith(f":{os.getpid()}")  # another process ran it
    assert done.progress["merges"]["done"] == 4
    _consistent(hub, done.result["merges"])


def test_killing_the_worker_mid_job_retries_it_and_the_catalog_stays_consistent(hub):
    n = 16
    job = hub.jobs.submit("merge_batch", _batch(n))
    deadline = time.monotonic() + 180
    while True:  # wait until the worker has stored a few merges, then kill it
        seen = hub.jobs.show(job.id)
        if seen.status == "running" and seen.progress.get("merges", {}).get("done", 0) >= 2:
            break
        assert not seen.done, seen
        assert time.monotonic() < deadline, seen
        time.sleep(0.05)
    pid = int(seen.worker.rsplit(":", 1)[1])
    assert pid != os.getpid()
    os.kill(pid, signal.SIGKILL)
    done = hub.jobs.wait(job.id, timeout=240)
    assert done.status == "succeeded", done.error
    assert done.attempts == 2 and done.worker != seen.worker
    merges = done.result["merges"]
    assert len(merges) == n and len({m["name"] for m in merges}) == n
    assert sum(m["existing"] for m in merges) >= 2  # what the killed attempt stored is reused, not redone
    _consistent(hub, merges)


def test_a_small_quality_grid_runs_on_the_ray_worker(hub):
    job = hub.jobs.submit("quality", {"quick": True, "max_examples": 8, "all_only": True, "threads": 1})
    done = hub.jobs.wait(job.id, timeout=420)
    assert done.status == "succeeded", done.error
    assert done.result["rows"] and done.result["plan"]["max_examples"] == 8
    assert done.progress["steps"]["done"] >= 1
    assert not done.worker.endswith(f":{os.getpid()}")
