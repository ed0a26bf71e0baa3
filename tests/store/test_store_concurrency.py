"""Several processes on one new catalog: concurrent first opens (migrations), adds, and a name race.

Real processes (subprocesses), not threads: SQLite locking and PostgreSQL advisory locks are
per connection and per process, and that is what the server and parallel CLI calls do.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import adapterhub
from adapterhub.store import Catalog

WORKER = r"""
import hashlib, json, sys, time
from pathlib import Path

url, signals, worker, count, mode = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
from adapterhub.errors import AdapterExistsError
from adapterhub.store import AdapterRecord, Catalog

(signals / f"ready-{worker}").touch()
deadline = time.monotonic() + 120
while not (signals / "go").exists():
    if time.monotonic() > deadline:
        sys.exit("the start signal never came")
    time.sleep(0.001)
catalog = Catalog(url)  # every process opens, and migrates, the new database at the same moment
results = []
for i in range(count):
    name = f"w{worker}/a{i:03d}" if mode == "distinct" else "race/same-name"
    record = AdapterRecord(
        name=name, digest=hashlib.sha256(f"{worker}-{i}".encode()).hexdigest(), size=1, rank=2, alpha=4.0,
        target_modules=["q"], config={"r": 2, "worker": worker}, tags=[f"w{worker}"],
    )
    try:
        catalog.add(record)
        results.append("ok")
    except AdapterExistsError:
        results.append("exists")
catalog.close()
print(json.dumps(results))
"""


def run_workers(tmp_path: Path, url: str, *, workers: int, count: int, mode: str) -> list[list[str]]:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    signals = tmp_path / "signals"
    signals.mkdir()
    repo_root = str(Path(adapterhub.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [repo_root, os.environ.get("PYTHONPATH")]))}
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), url, str(signals), str(w), str(count), mode],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for w in range(workers)
    ]
    try:
        deadline = time.monotonic() + 120
        while len(list(signals.glob("ready-*"))) < workers:  # all imported: start them together
            assert time.monotonic() < deadline, "workers did not start"
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
            time.sleep(0.01)
        (signals / "go").touch()
        outputs = [p.communicate(timeout=180) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, f"worker failed:\n{err}"
    return [json.loads(out) for out, _ in outputs]


@pytest.mark.slow
def test_four_processes_add_25_each(db_url: str, tmp_path: Path) -> None:
    results = run_workers(tmp_path, db_url, workers=4, count=25, mode="distinct")
    assert results == [["ok"] * 25] * 4
    with Catalog(db_url) as catalog:
        expected = sorted(f"w{w}/a{i:03d}" for w in range(4) for i in range(25))
        assert catalog.names() == expected and catalog.count() == 100
        for w in range(4):
            assert catalog.count(tag=f"w{w}") == 25
        assert all(len(catalog.revisions(name)) == 1 for name in expected[::7])


@pytest.mark.slow
def test_name_race_has_one_winner(db_url: str, tmp_path: Path) -> None:
    results = run_workers(tmp_path, db_url, workers=4, count=3, mode="same")
    flat = [r for worker in results for r in worker]
    assert flat.count("ok") == 1 and flat.count("exists") == 11
    with Catalog(db_url) as catalog:
        assert catalog.names() == ["race/same-name"]
        assert len(catalog.revisions("race/same-name")) == 1
