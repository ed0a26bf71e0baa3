"""A 20-merge batch as jobs: in-process (the local backend) against a local 2-process Ray cluster.

    OMP_NUM_THREADS=1 .venv/bin/python bench/jobs_bench.py            # prints the dict as JSON
    from jobs_bench import run_merge_batch_bench                      # bench/scale_bench.py

The catalog is a SQLite file in a temp home; three synthetic Llama-7B-shaped adapters (q/k/v/o
projections of 8 layers, rank 16, 17 MB each; ``synthetic_adapters``) are merged with LoRA-LEGO (k = 16), each merge with
its own seed and name, so all ``n`` are real merges stored with lineage. The batch is split into
``chunks`` jobs (one per Ray worker process), submitted at once and timed from the first submit to
the last job's end, through the catalog rows, as a user sees it:

- ``in_process_s``: the local backend (one job thread: the jobs run one after the other);
- ``ray_s``: a Ray head (no CPUs) plus one worker node with ``workers`` CPUs (= worker
  processes), started with ``ray start --block`` in process groups of their own and stopped with
  them; measured after a warm-up job, so the workers have imported torch and adapterhub already;
- ``ray_cold_s``: the warm-up itself (one merge on fresh workers: what the first job pays);
- ``ratio = ray_s / in_process_s`` (below 1: Ray is faster).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benches

RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def local_ray_cluster(workers: int = 2, env: dict[str, str] | None = None) -> Iterator[str]:
    """A Ray head (0 CPUs) and one worker node with ``workers`` CPUs on loopback; yields the address."""
    temp = tempfile.mkdtemp(prefix="ahray", dir="/tmp")  # short: Ray's socket paths have a length limit
    port = _free_port()
    run_env = {**os.environ, **(env or {}), "RAY_TMPDIR": temp}
    run_env.pop("ADAPTERHUB_RAY_ADDRESS", None)
    processes: list[subprocess.Popen] = []

    def start(*args: str) -> None:
        processes.append(subprocess.Popen(
            [RAY, "start", *args, "--block", "--disable-usage-stats", "--object-store-memory=100000000",
             "--node-ip-address=127.0.0.1"],
            env=run_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))

    try:
        start("--head", f"--port={port}", "--num-cpus=0", "--include-dashboard=false", f"--temp-dir={temp}")
        deadline = time.monotonic() + 90
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the Ray head did not start") from None
                time.sleep(0.2)
        start(f"--address=127.0.0.1:{port}", f"--num-cpus={workers}")
        import ray

        ray.init(address=f"127.0.0.1:{port}", log_to_driver=False, configure_logging=False)
        while ray.cluster_resources().get("CPU", 0) < workers:
            if time.monotonic() > deadline:
                raise RuntimeError("the Ray worker node did not join")
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        try:
            import ray

            ray.shutdown()
        except ImportError:
            pass
        for process in reversed(processes):
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(process.pid, sig)
                    process.wait(timeout=15)
                    break
                except ProcessLookupError:
                    break
                except subprocess.TimeoutExpired:
                    continue
        shutil.rmtree(temp, ignore_errors=True)


def _batches(names: list[str], n: int, chunks: int, tag: str) -> list[dict[str, Any]]:
    merges = [{"names": names, "method": "lego", "k": 16, "seed": i, "name": f"bench/{tag}-{i}"} for i in range(n)]
    return [{"merges": merges[i::chunks]} for i in range(chunks)]


def _timed(hub: Any, batches: list[dict[str, Any]]) -> float:
    start = time.perf_counter()
    jobs = [hub.jobs.submit("merge_batch", batch) for batch in batches]
    for job in jobs:
        done = hub.jobs.wait(job.id, timeout=1800, poll=0.05)
        if done.status != "succeeded":
            raise RuntimeError(f"job {done.id} {done.status}: {done.error}")
    return time.perf_counter() - start


def run_merge_batch_bench(n: int = 20, *, workers: int = 2, chunks: int | None = None, layers: int = 8) -> dict[str, Any]:
    """Time an ``n``-merge batch in-process and on a local Ray cluster of ``workers`` worker processes.

    Returns:
        ``{"in_process_s", "ray_s", "ray_cold_s", "ratio", "n", "chunks", "workers", "per_merge_in_process_s"}``.
    """
    from synthetic_adapters import write_adapters

    from adapterhub.app import AdapterHub

    chunks = chunks or workers
    root = Path(tempfile.mkdtemp(prefix="adapterhub-jobs-bench-"))
    saved = {k: os.environ.get(k) for k in ("ADAPTERHUB_HOME", "ADAPTERHUB_DATABASE_URL", "ADAPTERHUB_RAY_ADDRESS")}
    try:
        home = root / "home"
        os.environ["ADAPTERHUB_HOME"] = str(home)
        os.environ.pop("ADAPTERHUB_DATABASE_URL", None)
        os.environ.pop("ADAPTERHUB_RAY_ADDRESS", None)
        folders = write_adapters(root / "inputs", 3, layers=layers, names=["q_proj", "k_proj", "v_proj", "o_proj"], r=16)
        names = [f"bench/in{i}" for i in range(3)]
        with AdapterHub() as hub:
            for folder, name in zip(folders, names):
                hub.add(folder, name)
            in_process = _timed(hub, _batches(names, n, chunks, "local"))
            hub.jobs.shutdown()
        env = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "ADAPTERHUB_HOME": str(home)}
        with local_ray_cluster(workers, env) as address:
            os.environ["ADAPTERHUB_RAY_ADDRESS"] = address
            with AdapterHub() as hub:
                cold = _timed(hub, _batches(names, workers, workers, "warm"))  # one merge per worker process
                ray_s = _timed(hub, _batches(names, n, chunks, "ray"))
                hub.jobs.shutdown()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(root, ignore_errors=True)
    return {"n": n, "workers": workers, "chunks": chunks, "in_process_s": round(in_process, 3),
            "ray_s": round(ray_s, 3), "ray_cold_s": round(cold, 3), "ratio": round(ray_s / in_process, 3),
            "per_merge_in_process_s": round(in_process / n, 4), "layers": layers, "cpus": os.cpu_count()}


if __name__ == "__main__":
    print(json.dumps(run_merge_batch_bench(), indent=2))
