"""``/v1/jobs``: ``POST`` answers ``202`` + a job id (4xx before anything is queued), ``GET`` polls it
to the end, ``POST .../cancel`` and ``DELETE`` cancel it; each token sees only its own jobs.

In-process server (``TestClient``) over a hub with three random adapters; jobs run on the local
backend (a thread of the test process).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.helpers import random_adapter

pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = ("acme/a", "acme/b", "acme/c")


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from adapterhub.app import AdapterHub

    monkeypatch.setenv("ADAPTERHUB_JOB_HEARTBEAT_S", "0.1")
    monkeypatch.delenv("ADAPTERHUB_RAY_ADDRESS", raising=False)
    with AdapterHub(tmp_path / "home") as h:
        for seed, name in enumerate(NAMES):
            h.add_adapter(random_adapter(seed), name)
        yield h


@pytest.fixture
def client(hub):
    from adapterhub.server import create_app

    app = create_app(hub)
    yield TestClient(app, raise_server_exceptions=False)
    hub.jobs.shutdown()


@pytest.fixture
def acme(hub) -> dict[str, str]:
    return {"Authorization": f"Bearer {hub.create_token(name='acme-writer', owner='acme')['token']}"}


@pytest.fixture
def bob(hub) -> dict[str, str]:
    return {"Authorization": f"Bearer {hub.create_token(name='bob', owner='bob')['token']}"}


def _merges(*merges: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "merge_batch", "params": {"merges": list(merges)}}


def _wait(client: TestClient, url: str, headers: dict[str, str], timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(url, headers=headers)
        assert response.status_code == 200, response.text
        job = response.json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.05)


def test_a_merge_batch_job_answers_202_and_runs_to_success(client, hub, acme, bob):
    response = client.post("/v1/jobs", json=_merges(
        {"names": ["acme/a", "acme/b"], "name": "acme/ab", "method": "svd", "k": 2},
        {"names": ["acme/b", "acme/c"]}), headers=acme)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["id"] == body["job_id"] and body["kind"] == "merge_batch"
    assert response.headers["location"] == body["url"] and body["url"].endswith(f"/v1/jobs/{body['id']}")
    assert body["status"] in ("queued", "running", "succeeded") and "owner" not in body
    job = _wait(client, body["url"], acme)
    assert job["status"] == "succeeded" and job["error"] is None and job["attempts"] == 1
    names = [m["name"] for m in job["result"]["merges"]]
    assert names[0] == "acme/ab" and names[1].startswith("acme/")  # a derived name in the token's namespace
    assert job["progress"]["merges"]["done"] == 2
    for name in names:
        assert sorted(p.parent_name for p in hub.catalog.lineage(name))
    listed = client.get("/v1/jobs", headers=acme).json()
    assert [j["id"] for j in listed] == [body["id"]]
    # another token sees none of it
    assert client.get("/v1/jobs", headers=bob).json() == []
    other = client.get(body["url"], headers=bob)
    assert other.status_code == 404 and "acme" not in other.text
    assert client.get("/v1/jobs/" + "0" * 32, headers=acme).status_code == 404


@pytest.mark.parametrize(("body", "status", "message"), [
    ({"kind": "nope", "params": {}}, 422, "unknown job kind 'nope'"),
    ({"kind": "merge_batch", "params": {}}, 422, "merges"),
    ({"kind": "merge_batch", "params": {"merges": [{"names": ["acme/a", "acme/b"], "colour": 1}]}}, 422, "colour"),
    (_merges({"names": ["acme/a", "acme/none"]}), 404, "acme/none"),
    (_merges({"names": ["acme/a", "acme/b"], "name": "acme/c"}), 409, "acme/c"),
    (_merges({"names": ["acme/a", "acme/b"], "method": "nope"}), 422, "nope"),
    (_merges({"names": ["acme/a", "acme/b"], "name": "bob/x"}), 403, "bob/x"),
    ({"kind": "quality", "params": {"split": "train"}}, 422, "split"),
    ({"kind": "merge_batch"}, 422, "merges"),
    ({"kind": "shard_pack", "params": {"base_model": "tiny-bert"}}, 403, "admin token"),
    ({"kind": "train_batch", "params": {"trainings": [{"task": "wn_pos", "name": "bob/t"}]}}, 403, "bob/t"),
    ({"kind": "mhr", "params": {"task": "wn_pos", "inventory": ["acme/a"], "name": "bob/m"}}, 403, "bob/m"),
    ({"params": {}}, 422, "kind"),
])
def test_bad_jobs_are_refused_before_anything_is_queued(client, hub, acme, body, status, message):
    response = client.post("/v1/jobs", json=body, headers=acme)
    assert response.status_code == status, response.text
    assert message in response.json()["error"] and "Traceback" not in response.text
    assert hub.jobs.list() == []


def test_a_job_needs_a_token_that_may_write(client, hub):
    body = _merges({"names": ["acme/a", "acme/b"]})
    assert client.post("/v1/jobs", json=body).status_code == 401
    assert client.post("/v1/jobs", json=body, headers={"Authorization": "Bearer ah_nope"}).status_code == 401
    read_only = {"Authorization": f"Bearer {hub.create_token(name='ro', owner='acme', write=False)['token']}"}
    assert client.post("/v1/jobs", json=body, headers=read_only).status_code == 403
    for content in (b"not json", b"[]"):
        response = client.post("/v1/jobs", content=content, headers={"Content-Type": "application/json"})
        assert 400 <= response.status_code < 500
    assert hub.jobs.list() == []


def test_a_failed_job_says_why_with_its_status(client, hub, acme):
    hub.add_adapter(random_adapter(9, base_model="other-base"), "acme/other")
    response = client.post("/v1/jobs", json=_merges({"names": ["acme/a", "acme/other"]}), headers=acme)
    assert response.status_code == 202, response.text
    job = _wait(client, response.json()["url"], acme)
    assert job["status"] == "failed" and job["result"] is None
    assert job["error"]["status"] == 422 and "other-base" in job["error"]["message"]


class _Parked:
    """A backend that runs nothing (the job stays queued)."""

    name = "parked"

    def submit(self, job_id: str) -> None:
        pass

    def shutdown(self) -> None:
        pass


def test_cancel_a_queued_job_and_the_per_token_bound(client, hub, acme, bob):
    hub.jobs.backend = _Parked()
    client.app.state.job_limits = (1, 8)
    first = client.post("/v1/jobs", json=_merges({"names": ["acme/a", "acme/b"]}), headers=acme)
    assert first.status_code == 202 and first.json()["status"] == "queued"
    second = client.post("/v1/jobs", json=_merges({"names": ["acme/a", "acme/c"]}), headers=acme)
    assert second.status_code == 429 and "1 jobs pending" in second.json()["error"]
    url = first.json()["url"]
    assert client.post(url + "/cancel", headers=bob).status_code == 404  # not bob's
    cancelled = client.post(url + "/cancel", headers=acme)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert client.delete(url, headers=acme).json()["status"] == "cancelled"
    again = client.post("/v1/jobs", json=_merges({"names": ["acme/a", "acme/c"]}), headers=acme)
    assert again.status_code == 202  # a cancelled job is not pending
    assert sorted(r.name for r in hub.list()) == sorted(NAMES)


def test_a_server_starting_runs_the_jobs_left_queued(hub, acme):
    from adapterhub.server import create_app

    job = hub.jobs.submit("merge_batch", {"merges": [{"names": ["acme/a", "acme/b"], "name": "acme/left"}]},
                          dispatch=False)
    with TestClient(create_app(hub)) as client:  # the lifespan resumes queued jobs
        deadline = time.monotonic() + 60
        while hub.jobs.show(job.id).status != "succeeded":
            assert time.monotonic() < deadline, hub.jobs.show(job.id)
            time.sleep(0.05)
        assert client.get("/v1/health").status_code == 200
    assert hub.get("acme/left").name == "acme/left"


def test_a_running_server_reruns_a_job_whose_worker_died(hub):
    from adapterhub.server import create_app
    from adapterhub.store import jobs as rows

    job = hub.jobs.submit("merge_batch", {"merges": [{"names": ["acme/a", "acme/b"], "name": "acme/orphan"}]},
                          dispatch=False)
    assert rows.claim_job(hub.catalog, hub.jobs.show(job.id), "dead-host:1")  # then its worker died
    with TestClient(create_app(hub)):  # nobody lists jobs: the server's janitor finds it
        deadline = time.monotonic() + 60
        while hub.jobs.show(job.id).status != "succeeded":
            assert time.monotonic() < deadline, hub.jobs.show(job.id)
            time.sleep(0.05)
    done = hub.jobs.show(job.id)
    assert done.attempts == 2 and done.worker != "dead-host:1"
    assert hub.get("acme/orphan").name == "acme/orphan"


def test_a_merge_that_prefers_async_is_queued_as_a_job(client, hub, acme):
    spec = {"names": ["acme/a", "acme/b"], "name": "acme/async", "method": "linear"}
    response = client.post("/v1/merge", json=spec, headers={**acme, "Prefer": "respond-async"})
    assert response.status_code == 202, response.text
    job = _wait(client, response.headers["location"], acme)
    assert job["status"] == "succeeded" and job["kind"] == "merge_batch"
    assert [m["name"] for m in job["result"]["merges"]] == ["acme/async"]
    assert sorted(p.parent_name for p in hub.catalog.lineage("acme/async")) == ["acme/a", "acme/b"]
    # the same checks as the synchronous merge, before anything is queued
    taken = client.post("/v1/merge", json=spec, headers={**acme, "Prefer": "respond-async"})
    assert taken.status_code == 409 and len(client.get("/v1/jobs", headers=acme).json()) == 1
    assert client.post("/v1/merge", json={**spec, "name": "acme/sync"}, headers=acme).status_code == 200
