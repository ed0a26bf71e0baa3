"""``POST /v1/transfer`` (a Trans-LoRA job: checked first, ``202`` + job URL) and ``GET /v1/jobs/{id}``,
and the per-token bound on pending jobs (jobs are catalog rows, ``app/jobs``; here on the local backend).

The server runs in-process (``TestClient`` on ``create_app``); the base registry is replaced by tiny
random stand-ins for MiniLM, MPNet and SmolLM2 (real model ids), so a whole transfer job takes well
under a second and no real model loads.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from adapterhub.errors import InvalidParameterError
from adapterhub.models import bases
from tests.helpers import store_state

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
MPNET = "sentence-transformers/all-mpnet-base-v2"
SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"
TASK = "wn_adj_kind"
SOURCE = "acme/adj"  # has a transfer kit
NOKIT = "acme/nokit"  # has none
SMALL = {"samples": 6, "max_candidates": 24, "epochs": 1}
SEEDS = ["very large in size", "relating to the sea", "having been broken", "of a bright colour", "made by hand"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def fake_bases(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The registry with tiny stand-ins; each loader returns one object per test."""
    from adapterhub.models.base import tiny_random_bert
    from adapterhub.models.causal import LLAMA_TARGET_MODULES, tiny_random_llama
    from adapterhub.models.lora_layers import DEFAULT_EXCLUDE_MODULES, DEFAULT_TARGET_MODULES

    lm = tiny_random_llama()
    lm.base_model_id = SMOLLM2
    models = {"minilm": dataclasses.replace(tiny_random_bert(seed=0), base_model_id=MINILM),
              "mpnet": dataclasses.replace(tiny_random_bert(seed=1), base_model_id=MPNET), "smollm2": lm}
    registry = {
        "minilm": bases.BaseSpec("minilm", MINILM, "encoder", DEFAULT_TARGET_MODULES, DEFAULT_EXCLUDE_MODULES, None,
                                 lambda: models["minilm"], "tiny"),
        "mpnet": bases.BaseSpec("mpnet", MPNET, "encoder", ("query", "key", "value", "dense"), DEFAULT_EXCLUDE_MODULES,
                                None, lambda: models["mpnet"], "tiny"),
        "smollm2": bases.BaseSpec("smollm2", SMOLLM2, "causal_lm", LLAMA_TARGET_MODULES, (), "CAUSAL_LM",
                                  lambda: models["smollm2"], "tiny"),
    }
    monkeypatch.setattr(bases, "_registry", lambda: registry)
    return models


@pytest.fixture
def hub(tmp_path: Path, fake_bases: dict[str, Any]):
    """A hub with ``acme/adj`` (kit prepared from 16 train texts) and ``acme/nokit`` (no kit)."""
    from adapterhub.app import AdapterHub
    from adapterhub.app.transfer_kit import prepare
    from adapterhub.models.train import train_adapter
    from adapterhub.tasks import load_task

    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in load_task(TASK).texts("train")[:16]))
    with AdapterHub(tmp_path / "home") as h:
        for name, seed in ((SOURCE, 0), (NOKIT, 1)):
            trained = train_adapter(fake_bases["minilm"], TASK, max_steps=2, rank=4, alpha=8, batch_size=8, seed=seed)
            h.add_adapter(trained.adapter, name, task=TASK)
        prepare(h, SOURCE, data=data, max_real=16)
        yield h


@pytest.fixture
def app(hub):
    from adapterhub.server import create_app

    application = create_app(hub)
    yield application
    application.state.jobs.shutdown()


@pytest.fixture
def client(app) -> TestClient:
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture
def acme(hub) -> dict[str, str]:
    return {"Authorization": f"Bearer {hub.create_token(name='acme-writer', owner='acme')['token']}"}


@pytest.fixture
def bob(hub) -> dict[str, str]:
    return {"Authorization": f"Bearer {hub.create_token(name='bob', owner='bob')['token']}"}


def _jobs(app) -> int:
    return len(app.state.hub.jobs.list(limit=None))


def _state(hub) -> tuple:
    from adapterhub.store import hub_catalog

    with hub.catalog.reading() as reader:
        kits = sorted(tuple(r) for r in reader.rows("SELECT kind, key, digest FROM artifacts", {}))
    return store_state(hub.settings.home), kits, sorted(r.name for r in hub_catalog.list_repos(hub.catalog))


def _wait(client: TestClient, url: str, headers: dict[str, str], timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(url, headers=headers)
        assert response.status_code == 200, response.text
        job = response.json()
        if job["status"] in ("succeeded", "failed"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.05)


def _post(client: TestClient, headers: dict[str, str] | None, **body: Any):
    return client.post("/v1/transfer", json={"name": SOURCE, "to_base": "mpnet", **SMALL, **body}, headers=headers)


# -- a valid request: 202, then the job runs to the end ------------------------------------------------------


def test_a_transfer_job_runs_and_its_result_is_in_the_catalog(client, app, hub, acme, bob):
    response = _post(client, acme)
    assert response.status_code == 202, response.text
    body = response.json()
    url = body["url"]
    assert response.headers["location"] == url and url.endswith(f"/v1/jobs/{body['job_id']}")
    assert body["name"] == "acme/adj-mpnet" and body["filtered"] is True
    assert body["status"] in ("queued", "running", "succeeded")
    job = _wait(client, url, acme)
    assert job["status"] == "succeeded", job
    assert job["id"] == body["job_id"] and job["kind"] == "transfer" and job["error"] is None
    assert job["finished"] is not None and job["finished"] >= job["created"]
    result = job["result"]
    assert result["adapter"]["name"] == "acme/adj-mpnet" and result["filtered"] is True
    assert result["to_base"] == MPNET and result["source"] == SOURCE
    record = hub.get("acme/adj-mpnet")
    assert record.base_model == MPNET and record.digest == result["adapter"]["digest"]
    assert {"generated", "accepted", "distillation"} <= set(job["progress"])
    assert job["progress"]["distillation"] == {"done": 1, "total": 1}
    assert job["progress"]["generated"]["total"] == SMALL["max_candidates"]
    (parent,) = hub.catalog.lineage("acme/adj-mpnet")
    assert parent.parent_name == SOURCE and parent.params["transfer_kit"] is not None
    # the job is the submitter's alone: another token, no token, an unknown id all answer 404
    for headers in (bob, {}):
        other = client.get(url, headers=headers)
        assert other.status_code == 404 and "error" in other.json()
        assert "acme" not in other.text and "succeeded" not in other.text
    unknown = client.get("/v1/jobs/" + "0" * 32, headers=acme)
    assert unknown.status_code == 404 and "error" in unknown.json()
    # the same request again: the name is taken now, refused before a job is made
    jobs = _jobs(app)
    again = _post(client, acme)
    assert again.status_code == 409 and _jobs(app) == jobs


def test_a_job_with_seeds_and_no_kit_is_unfiltered_and_a_named_result_goes_where_asked(client, hub, acme):
    response = _post(client, acme, name=NOKIT, seeds=SEEDS, new_name="acme/moved", rank=4)
    assert response.status_code == 202, response.text
    assert response.json()["filtered"] is False and response.json()["name"] == "acme/moved"
    job = _wait(client, response.json()["url"], acme)
    assert job["status"] == "succeeded", job
    (parent,) = hub.catalog.lineage("acme/moved")
    assert parent.params["filtered"] is False and parent.params["transfer_kit"] is None
    assert hub.get("acme/moved").rank == 4


def test_another_namespace_may_transfer_a_public_adapter_into_its_own(client, hub, bob):
    response = _post(client, bob)
    assert response.status_code == 202, response.text
    assert response.json()["name"] == "bob/adj-mpnet"
    job = _wait(client, response.json()["url"], bob)
    assert job["status"] == "succeeded", job
    assert hub.get("bob/adj-mpnet").base_model == MPNET


# -- refused at once: 401, 403, 404, 4xx; no job, nothing stored -------------------------------------------------


def test_auth_is_checked_before_anything_else(client, app, hub, bob):
    before = _state(hub)
    response = _post(client, None)
    assert response.status_code == 401 and "error" in response.json()
    response = _post(client, {"Authorization": "Bearer ah_not-a-token"})
    assert response.status_code == 401
    response = _post(client, bob, new_name="acme/by-bob")  # bob writes only into bob/
    assert response.status_code == 403 and "acme/by-bob" in response.json()["error"]
    read_only = {"Authorization": f"Bearer {hub.create_token(name='ro', owner='acme', write=False)['token']}"}
    assert _post(client, read_only).status_code == 403
    assert _jobs(app) == 0 and _state(hub) == before


def test_a_private_source_is_hidden_from_other_namespaces_and_gives_a_private_result(client, app, hub, acme, bob):
    from adapterhub.store import hub_catalog

    hub_catalog.create_repo(hub.catalog, SOURCE, private=True)
    response = _post(client, bob)
    assert response.status_code == 404 and _jobs(app) == 0  # as if it did not exist
    response = _post(client, acme)
    assert response.status_code == 202, response.text
    assert _wait(client, response.json()["url"], acme)["status"] == "succeeded"
    assert "acme/adj-mpnet" in hub_catalog.private_repo_names(hub.catalog)


@pytest.mark.parametrize(("body", "status", "message"), [
    ({"to_base": "nope"}, 422, "unknown base 'nope'"),
    ({"to_base": "minilm"}, 422, "already on minilm"),
    ({"name": "acme/none"}, 404, "acme/none"),
    ({"name": NOKIT}, 422, "no transfer kit and no seeds"),
    ({"samples": 0}, 422, "samples"),
    ({"samples": 5001}, 422, "samples"),
    ({"seeds": []}, 422, "seeds"),
    ({"seeds": [f"seed {i}" for i in range(33)]}, 422, "seeds"),
    ({"seeds": ["   ", ""]}, 422, "no example"),
    ({"seeds": "one seed"}, 422, "seeds"),
    ({"rank": 0}, 422, "rank"),
    ({"epochs": 21}, 422, "epochs"),
    ({"max_candidates": 0}, 422, "max_candidates"),
    ({"colour": "red"}, 422, "colour"),
    ({"new_name": "acme/adj"}, 409, "acme/adj"),
    ({"new_name": "acme/not a name"}, 400, "name"),
    ({"new_name": "not a name"}, 403, "not a name"),  # the namespace is checked first
])
def test_bad_requests_are_refused_before_any_job(client, app, hub, acme, body, status, message):
    before = _state(hub)
    response = _post(client, acme, **body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert message in error and "Traceback" not in response.text
    assert _jobs(app) == 0 and _state(hub) == before


def test_a_body_that_is_not_a_transfer_request(client, app, acme):
    for content in (b"not json", b"[]", b'{"name": "acme/adj"}'):
        response = client.post("/v1/transfer", content=content, headers={**acme, "Content-Type": "application/json"})
        assert 400 <= response.status_code < 500 and "error" in response.json()
    assert _jobs(app) == 0


def test_to_base_given_as_a_model_id_names_the_result_by_the_short_name(client, acme):
    response = _post(client, acme, to_base=MPNET)
    assert response.status_code == 202, response.text
    assert response.json()["name"] == "acme/adj-mpnet"


@pytest.mark.parametrize("generator", ["minilm", "nope"])
def test_a_bad_generator_is_refused_before_any_job(client, app, acme, generator):
    response = _post(client, acme, generator=generator)
    assert response.status_code == 422, response.text
    assert _jobs(app) == 0


# -- a job that fails inside ---------------------------------------------------------------------------------------


def test_a_job_that_fails_with_a_hub_error_says_why_without_server_paths(client, hub, acme, monkeypatch):
    import adapterhub.transfer as engine

    def boom(*args, **kwargs):
        raise InvalidParameterError(f"boom /tmp/x/secret and {hub.settings.home}/blobs/ab/cd")

    monkeypatch.setattr(engine, "transfer_adapter", boom)
    before = _state(hub)
    response = _post(client, acme)
    assert response.status_code == 202, response.text
    job = _wait(client, response.json()["url"], acme)
    assert job["status"] == "failed" and job["result"] is None
    assert job["error"]["status"] == 422
    message = job["error"]["message"]
    assert message.startswith("boom ") and "/tmp/x" not in message and "secret" not in message
    assert str(hub.settings.home) not in message and "<server file>" in message and "<blob store>" in message
    assert "Traceback" not in json.dumps(job)
    assert _state(hub) == before


def test_a_job_that_fails_unexpectedly_says_internal_error(client, hub, acme, monkeypatch):
    import adapterhub.transfer as engine

    def bug(*args, **kwargs):
        raise RuntimeError("unexpected at /tmp/x/secret")

    monkeypatch.setattr(engine, "transfer_adapter", bug)
    before = _state(hub)
    response = _post(client, acme)
    assert response.status_code == 202, response.text
    job = _wait(client, response.json()["url"], acme)
    assert job["status"] == "failed"
    assert job["error"] == {"status": 500, "message": "internal error"}
    text = json.dumps(job)
    assert "Traceback" not in text and "RuntimeError" not in text and "secret" not in text
    assert _state(hub) == before


def test_a_missing_generator_fails_the_job_with_its_message(client, hub, acme, fake_bases, monkeypatch):
    from adapterhub.models.base import BaseModelNotFoundError

    registry = bases._registry()

    def missing():
        raise BaseModelNotFoundError(SMOLLM2, "the package adapterhub-smollm2 is not installed")

    patched = {**registry, "smollm2": dataclasses.replace(registry["smollm2"], loader=missing)}
    monkeypatch.setattr(bases, "_registry", lambda: patched)
    response = _post(client, acme)
    assert response.status_code == 202, response.text
    job = _wait(client, response.json()["url"], acme)
    assert job["status"] == "failed" and job["error"]["status"] >= 400
    assert "cannot load base model" in job["error"]["message"]


# -- the bound on pending jobs per token ------------------------------------------------------------------------------


def test_a_second_job_of_the_same_token_while_one_runs_is_429(client, app, hub, acme, bob, monkeypatch):
    gate, started = threading.Event(), threading.Event()
    app.state.job_limits = (1, 8)  # one pending job per token
    calls: list[str] = []

    def transfer(name, **kwargs):
        calls.append(kwargs["new_name"])
        started.set()
        assert gate.wait(30)
        return {"adapter": {"name": kwargs["new_name"]}}

    monkeypatch.setattr(hub, "transfer", transfer)
    try:
        first = _post(client, acme)
        assert first.status_code == 202, first.text
        assert started.wait(10)
        second = _post(client, acme, new_name="acme/second")
        assert second.status_code == 429 and "error" in second.json()
        other = _post(client, bob)  # another token has its own allowance
        assert other.status_code == 202, other.text
    finally:
        gate.set()
    assert _wait(client, first.json()["url"], acme)["result"] == {"adapter": {"name": "acme/adj-mpnet"}}
    assert _wait(client, other.json()["url"], bob)["status"] == "succeeded"
    assert "acme/second" not in calls
    assert _post(client, acme, new_name="acme/third").status_code == 202  # allowed again once the first is done
    app.state.jobs.shutdown()
