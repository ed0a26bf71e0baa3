"""Jobs on the local backend: submit, list, show, cancel; a merge batch; failures; stale workers; CAS.

Every job here runs on the in-process thread pool (no Ray); ``tests/app/test_jobs_ray.py`` runs the
same jobs on a real local Ray cluster. A file SQLite catalog under ``tmp_path``, and PostgreSQL
when ``ADAPTERHUB_TEST_POSTGRES_URL`` is set.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from adapterhub.app import AdapterHub
from adapterhub.app.jobs import JobNotFoundError
from adapterhub.errors import AdapterExistsError, AdapterNotFoundError, InvalidParameterError, TooManyRequestsError
from adapterhub.store import jobs as rows
from tests.helpers import postgres_database, random_adapter

pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = ("acme/a", "acme/b", "acme/c")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str | None]:
    """The default SQLite file, or a fresh PostgreSQL database (``ADAPTERHUB_TEST_POSTGRES_URL``)."""
    if request.param == "sqlite":
        yield None
    else:
        with postgres_database(request.getfixturevalue("postgres_admin")) as url:
            yield url


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database_url: str | None):
    monkeypatch.setenv("ADAPTERHUB_JOB_HEARTBEAT_S", "0.1")
    monkeypatch.delenv("ADAPTERHUB_RAY_ADDRESS", raising=False)
    with AdapterHub(tmp_path / "home", database_url) as h:
        for seed, name in enumerate(NAMES):
            h.add_adapter(random_adapter(seed), name)
        yield h
        h.jobs.shutdown()


def batch(*merges: dict) -> dict:
    return {"merges": list(merges)}


def _age(hub: AdapterHub, job_id: str, seconds: float) -> None:
    """Make a running job's heartbeat ``seconds`` old (as if its worker died then)."""
    from sqlalchemy import update

    from adapterhub.store.orm_jobs import Job

    with hub.catalog.transaction() as tx:
        tx.session.execute(update(Job).where(Job.id == job_id).values(
            heartbeat=datetime.now(timezone.utc) - timedelta(seconds=seconds)))


def test_a_merge_batch_runs_and_its_adapters_appear_with_lineage(hub):
    job = hub.jobs.submit("merge_batch", batch(
        {"names": ["acme/a", "acme/b"], "method": "svd", "k": 2, "name": "acme/ab"},
        {"names": ["acme/a", "acme/b", "acme/c"], "method": "linear"},
    ))
    assert job.status == "queued" and job.kind == "merge_batch" and job.owner == "local"
    done = hub.jobs.wait(job.id, timeout=60)
    assert done.status == "succeeded", done.error
    assert done.attempts == 1 and done.error is None and done.finished >= done.created
    merges = done.result["merges"]
    assert [m["name"] for m in merges][0] == "acme/ab" and merges[1]["name"].startswith("merged/linear-")
    assert not any(m["existing"] for m in merges)
    assert done.progress["merges"] == {"done": 2, "total": 2, "message": merges[1]["name"]}
    for merge in merges:
        record = hub.get(merge["name"])
        assert record.digest == merge["digest"]
        assert sorted(p.parent_name for p in hub.catalog.lineage(merge["name"])) == sorted(merge["parents"])
    assert hub.catalog.lineage("acme/ab")[0].operation == "merge:svd"
    listed = hub.jobs.list()
    assert [j.id for j in listed] == [job.id]
    assert hub.jobs.show(job.id).to_dict()["status"] == "succeeded"
    assert hub.verify() == {"missing": [], "corrupt": []}


@pytest.mark.parametrize(("kind", "params", "error", "message"), [
    ("nope", {}, InvalidParameterError, "choose one of merge_batch, quality, transfer"),
    ("merge_batch", {}, InvalidParameterError, "merges: Field required"),
    ("merge_batch", {"merges": [{"names": ["acme/a", "acme/b"], "colour": 1}]}, InvalidParameterError, "colour"),
    ("merge_batch", batch({"names": ["acme/a"]}), InvalidParameterError, "names"),
    ("merge_batch", batch({"names": ["acme/a", "acme/none"]}), AdapterNotFoundError, "acme/none"),
    ("merge_batch", batch({"names": ["acme/a", "acme/b"], "name": "acme/c"}), AdapterExistsError, "acme/c"),
    ("merge_batch", batch({"names": ["acme/a", "acme/b"], "method": "nope"}), InvalidParameterError, "nope"),
    ("merge_batch", batch({"names": ["acme/a", "acme/b"], "name": "acme/x"},
                          {"names": ["acme/b", "acme/c"], "name": "acme/x"}), InvalidParameterError, "twice"),
    ("quality", {"base": "nope"}, Exception, "nope"),
    ("quality", {"split": "train"}, InvalidParameterError, "split"),
])
def test_bad_jobs_are_refused_before_anything_is_queued(hub, kind, params, error, message):
    with pytest.raises(error, match=message):
        hub.jobs.submit(kind, params)
    assert hub.jobs.list() == []


def test_a_failing_job_is_marked_failed_with_the_message_and_stores_nothing(hub):
    hub.add_adapter(random_adapter(7, base_model="other-base"), "acme/other")
    before = sorted(r.name for r in hub.list())
    job = hub.jobs.submit("merge_batch", batch({"names": ["acme/a", "acme/other"], "method": "linear"}))
    done = hub.jobs.wait(job.id, timeout=60)
    assert done.status == "failed" and done.result is None
    assert done.error["type"] == "IncompatibleAdaptersError" and "other-base" in done.error["message"]
    assert sorted(r.name for r in hub.list()) == before


def test_an_unexpected_error_says_internal_error_and_keeps_the_detail_for_the_log(hub, monkeypatch):
    def bug(*args, **kwargs):
        raise RuntimeError("unexpected")

    monkeypatch.setattr(hub, "merge", bug)
    job = hub.jobs.submit("merge_batch", batch({"names": ["acme/a", "acme/b"]}))
    done = hub.jobs.wait(job.id, timeout=60)
    assert done.status == "failed"
    assert done.error == {"type": "InternalError", "message": "internal error", "detail": "RuntimeError: unexpected"}


def test_cancel_a_queued_job_and_a_running_one(hub, monkeypatch):
    queued = hub.jobs.submit("merge_batch", batch({"names": ["acme/a", "acme/b"]}), dispatch=False)
    assert hub.jobs.cancel(queued.id).status == "cancelled"
    assert hub.jobs.run(queued.id).status == "cancelled"  # nothing runs a cancelled job
    started, stopped = threading.Event(), threading.Event()

    def slow_merge(names, *, progress, **kwargs):
        started.set()
        try:
            for i in range(10_000):
                progress(i, 10_000, "module")
                stopped.wait(0.01)
        finally:
            stopped.set()
        raise AssertionError("never cancelled")

    monkeypatch.setattr(hub, "merge", slow_merge)
    running = hub.jobs.submit("merge_batch", batch({"names": ["acme/a", "acme/b"]}))
    assert started.wait(30)
    assert hub.jobs.cancel(running.id).status == "cancelled"
    assert stopped.wait(30)
    final = hub.jobs.wait(running.id, timeout=30)
    assert final.status == "cancelled" and final.result is None
    assert sorted(r.name for r in hub.list()) == sorted(NAMES)
    assert hub.jobs.cancel(running.id).status == "cancelled"  # cancelling an ended job changes nothing


def test_owners_see_their_own_jobs_only(hub):
    job = hub.jobs.submit("merge_batch", batch({"names": ["acme/a", "acme/b"]}), owner="token:1", dispatch=False)
    assert hub.jobs.show(job.id, owner="token:1").id == job.id
    with pytest.raises(JobNotFoundError):
        hub.jobs.show(job.id, owner="token:2")
    with pytest.raises(JobNotFoundError):
        hub.jobs.cancel(job.id, owner="token:2")
    with pytest.raises(JobNotFoundError):
        hub.jobs.show("0" * 32)
    assert [j.id for j in hub.jobs.list(owner="token:2")] == []


def test_bounds_per_owner_and_in_all(hub):
    spec = batch({"names": ["acme/a", "acme/b"]})
    hub.jobs.submit("merge_batch", spec, owner="alice", per_owner=1, dispatch=False)
    with pytest.raises(TooManyRequestsError, match="already has 1 jobs pending"):
        hub.jobs.submit("merge_batch", spec, owner="alice", per_owner=1, dispatch=False)
    hub.jobs.submit("merge_batch", spec, owner="bob", per_owner=1, max_pending=2, dispatch=False)
    with pytest.raises(TooManyRequestsError, match="server has 2 jobs pending"):
        hub.jobs.submit("merge_batch", spec, owner="carol", per_owner=1, max_pending=2, dispatch=False)


def test_a_stale_running_job_is_requeued_then_run_and_a_retry_duplicates_nothing(hub):
    job = hub.jobs.submit("merge_batch", batch(
        {"names": ["acme/a", "acme/b"], "name": "acme/ab"}, {"names": ["acme/b", "acme/c"]}), dispatch=False)
    # a worker claimed it and stored the first merge, then died (its heartbeat stops)
    assert rows.claim_job(hub.catalog, hub.jobs.show(job.id), "elsewhere:1")
    hub.merge(["acme/a", "acme/b"], name="acme/ab")
    _age(hub, job.id, 60)
    assert hub.jobs.show(job.id).status == "running"
    assert [j.status for j in hub.jobs.list()] == ["queued"]  # whoever looks next requeues it
    done = hub.jobs.run(job.id)
    assert done.status == "succeeded" and done.attempts == 2 and done.worker == hub.jobs.worker
    assert [m["existing"] for m in done.result["merges"]] == [True, False]
    children = [c.child_name for c in hub.catalog.descendants("acme/b")]
    assert sorted(children) == sorted({*children}) and len(children) == 2 and len(hub.list()) == len(NAMES) + 2
    # the dead attempt cannot write over the one that replaced it
    assert not rows.finish_job(hub.catalog, job.id, 1, "failed", error={"message": "zombie"})
    assert not rows.heartbeat_job(hub.catalog, job.id, 1)
    assert hub.jobs.show(job.id).status == "succeeded"


def test_a_job_whose_worker_keeps_dying_fails_once_its_attempts_are_spent(hub):
    job = hub.jobs.submit("merge_batch", batch({"names": ["acme/a", "acme/b"]}), max_attempts=2, dispatch=False)
    for attempt in (1, 2):
        assert rows.claim_job(hub.catalog, hub.jobs.show(job.id), f"dead:{attempt}")
        _age(hub, job.id, 60)
        hub.jobs.sweep()
    failed = hub.jobs.show(job.id)
    assert failed.status == "failed" and failed.attempts == 2
    assert failed.error["type"] == "WorkerLostError" and "all 2 attempts are spent" in failed.error["message"]
    assert "dead:2" in failed.error["message"]
    assert sorted(r.name for r in hub.list()) == sorted(NAMES)


def test_compare_and_set_lets_one_worker_claim_a_job(hub):
    job = hub.jobs.submit("merge_batch", batch({"names": ["acme/a", "acme/b"]}), dispatch=False)
    seen = hub.jobs.show(job.id)
    barrier = threading.Barrier(4)
    wins: list[bool] = []

    def claim(i: int) -> None:
        barrier.wait()
        wins.append(rows.claim_job(hub.catalog, seen, f"racer:{i}"))

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(wins) == [False, False, False, True]
    assert hub.jobs.show(job.id).attempts == 1
    # a second runner leaves a running job to its runner (a fresh heartbeat is not taken over)
    assert hub.jobs.run(job.id).status == "running"
    assert sorted(r.name for r in hub.list()) == sorted(NAMES)


def test_a_takeover_waits_for_the_dead_attempt_to_go_stale(hub):
    job = hub.jobs.submit("merge_batch", batch({"names": ["acme/a", "acme/b"]}), dispatch=False)
    assert rows.claim_job(hub.catalog, hub.jobs.show(job.id), "dead:1")
    done = hub.jobs.run(job.id, takeover=True)  # waits ~stale_s (0.4 s here), then takes it over
    assert done.status == "succeeded" and done.attempts == 2


def test_shard_pack_runs_as_a_job_and_a_rerun_packs_nothing_new(hub):
    first = hub.jobs.wait(hub.jobs.submit("shard_pack", {"base_model": "tiny-bert", "pool_size": 8}).id, timeout=60)
    assert first.status == "succeeded", first.error
    assert first.result["adapters"] == len(NAMES)
    again = hub.jobs.wait(hub.jobs.submit("shard_pack", {"base_model": "tiny-bert", "pool_size": 8}).id, timeout=60)
    assert again.status == "succeeded" and again.result["packed"] == []


@pytest.mark.parametrize(("kind", "params", "message"), [
    ("train_batch", {"trainings": [{"task": "nope", "name": "acme/t"}]}, "no task named 'nope'"),
    ("train_batch", {"trainings": [{"task": "wn_pos", "name": "acme/a"}]}, "acme/a"),
    ("train_batch", {"trainings": [{"task": "wn_pos", "name": "acme/t"}, {"task": "wn_pos", "name": "acme/t"}]},
     "twice"),
    ("train_batch", {"trainings": [{"task": "wn_pos", "name": "acme/t", "base": "nope"}]}, "nope"),
    ("mhr", {"task": "wn_pos", "inventory": ["acme/a", "acme/zz"], "name": "acme/m"}, "acme/zz"),
    ("mhr", {"task": "wn_pos", "inventory": ["acme/a"], "name": "acme/b"}, "acme/b"),
    ("shard_pack", {"base_model": "no-such-base"}, "no adapter of base 'no-such-base'"),
])
def test_the_other_kinds_refuse_bad_input_before_queueing(hub, kind, params, message):
    with pytest.raises(Exception, match=message):
        hub.jobs.submit(kind, params)
    assert hub.jobs.list() == []


def test_importing_the_facade_imports_neither_ray_nor_torch():
    import subprocess
    import sys

    code = "import sys, adapterhub.app; print(sorted({'ray', 'torch', 'pydantic'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "[]", done.stderr


def test_finished_jobs_are_pruned_after_the_retention(hub):
    done = hub.jobs.wait(hub.jobs.submit("merge_batch", batch({"names": ["acme/a", "acme/b"]})).id, timeout=60)
    queued = hub.jobs.submit("merge_batch", batch({"names": ["acme/a", "acme/c"]}), dispatch=False)
    assert done.status == "succeeded"
    assert rows.prune_jobs(hub.catalog, 3600) == 0
    assert rows.prune_jobs(hub.catalog, 0) == 1  # the finished one; a queued job is never pruned
    assert [j.id for j in hub.jobs.list()] == [queued.id]


def test_an_equal_merge_in_another_namespace_is_not_taken_for_this_jobs_result(hub):
    theirs = hub.merge(["acme/a", "acme/b"], namespace="bob").record.name
    job = hub.jobs.submit("merge_batch", batch({"names": ["acme/a", "acme/b"]}))
    done = hub.jobs.wait(job.id, timeout=60)
    assert done.status == "succeeded", done.error
    (merge,) = done.result["merges"]
    assert merge["existing"] is False and merge["name"].startswith("merged/lego-") and merge["name"] != theirs


def test_an_unreachable_ray_cluster_is_a_clear_error_and_the_job_ends_failed(hub, monkeypatch):
    pytest.importorskip("ray")
    import ray

    from adapterhub.app.job_backends import RayBackend

    if ray.is_initialized():
        pytest.skip("a Ray driver is already connected in this process")

    def refused(**kwargs):
        raise ConnectionError("refused")

    monkeypatch.setattr(ray, "init", refused)
    with pytest.raises(InvalidParameterError, match="cannot reach the Ray cluster at ADAPTERHUB_RAY_ADDRESS=127"):
        RayBackend(hub, "127.0.0.1:1")

    class Unusable:
        name = "unusable"

        def submit(self, job_id):
            RayBackend(hub, "127.0.0.1:1")

        def shutdown(self):
            pass

    hub.jobs.backend = Unusable()
    with pytest.raises(InvalidParameterError, match="cannot reach the Ray cluster"):
        hub.jobs.submit("merge_batch", batch({"names": ["acme/a", "acme/b"]}))
    (job,) = hub.jobs.list()
    assert job.status == "failed" and "cannot reach the Ray cluster" in job.error["message"]
