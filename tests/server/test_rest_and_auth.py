"""The /v1 REST face, merge on demand, and read access control (--read-token-required, private repos)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch
from huggingface_hub import HfApi, snapshot_download
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

from adapterhub.lora import LoraAdapter
from adapterhub.store import LineageRecord
from tests.helpers import Live, live_hub, random_adapter


@pytest.fixture(scope="module")
def catalog(live):
    hub = live.hub
    a = hub.add_adapter(random_adapter(60), "rest/sql", task="text-to-sql", tags=["sql", "prod"])
    b = hub.add_adapter(random_adapter(61, base_model="other-base"), "rest/chat", task="chat", tags=["chat"],
                        description="talks about SQL a lot")
    hub.add_adapter(random_adapter(62), "rest/child", task="text-to-sql",
                    lineage=[LineageRecord(parent_name="rest/sql", operation="merge:linear", parent_digest=a.digest,
                                           weight=1.0),
                             LineageRecord(parent_name="rest/chat", operation="merge:linear", parent_digest=b.digest,
                                           weight=1.0)])
    return hub


def names(url: str, **params: str) -> list[str]:
    response = httpx.get(f"{url}/v1/adapters", params=params)
    assert response.status_code == 200
    return [r["name"] for r in response.json() if r["name"].startswith("rest/")]


def test_list_and_search(live, catalog):
    assert names(live.url) == ["rest/chat", "rest/child", "rest/sql"]
    assert names(live.url, task="text-to-sql") == ["rest/child", "rest/sql"]
    assert names(live.url, tag="prod") == ["rest/sql"]
    assert names(live.url, base_model="other-base") == ["rest/chat"]
    assert names(live.url, q="sql") == ["rest/chat", "rest/child", "rest/sql"]  # name, task or description
    assert names(live.url, q="no-such-thing") == []


def test_show_and_lineage(live, catalog):
    shown = httpx.get(f"{live.url}/v1/adapters/rest/child").json()
    assert shown["name"] == "rest/child" and [p["parent_name"] for p in shown["lineage"]] == ["rest/sql", "rest/chat"]
    tree = httpx.get(f"{live.url}/v1/adapters/rest/child/lineage").json()
    assert [(p["name"], p["operation"]) for p in tree["parents"]] == [("rest/sql", "merge:linear"),
                                                                     ("rest/chat", "merge:linear")]
    for path in ("/v1/adapters/rest/none", "/v1/adapters/rest/none/lineage"):
        response = httpx.get(live.url + path)
        assert response.status_code == 404 and "rest/none" in response.json()["error"]


def test_merge_on_demand_is_pullable_at_once(live, catalog, tmp_path):
    spec = {"names": ["rest/sql", "rest/child"], "method": "linear", "weights": [0.5, 0.25], "name": "rest/merged"}
    assert httpx.post(f"{live.url}/v1/merge", json=spec).status_code == 401  # writes need a token
    response = httpx.post(f"{live.url}/v1/merge", json=spec, headers={"Authorization": f"Bearer {live.token}"},
                          timeout=120)
    assert response.status_code == 200, response.text
    assert response.json()["repo_id"] == "rest/merged"
    folder = Path(snapshot_download("rest/merged", endpoint=live.url, cache_dir=tmp_path / "c"))
    merged = LoraAdapter.load(folder)
    sql, child = random_adapter(60), random_adapter(62)
    for path in sql.module_paths:
        expected = 0.5 * sql.module(path).delta() + 0.25 * child.module(path).delta()
        torch.testing.assert_close(merged.module(path).delta(), expected, rtol=1e-5, atol=1e-6)
    assert {p["parent_name"] for p in httpx.get(f"{live.url}/v1/adapters/rest/merged").json()["lineage"]} == {
        "rest/sql",
        "rest/child",
    }


def test_merge_of_cancelling_inputs_and_auto_answer_200(live, catalog):
    """Undefined errors come back as null (a strict JSON encoder refuses inf: that was a 500)."""
    live.hub.add_adapter(random_adapter(60), "rest/sql-copy", task="text-to-sql")
    headers = {"Authorization": f"Bearer {live.token}"}
    spec = {"names": ["rest/sql", "rest/sql-copy"], "weights": [0.5, -0.5], "k": 4, "method": "lego",
            "params": {"output_reweight": "none"}, "name": "rest/cancelled"}
    response = httpx.post(f"{live.url}/v1/merge", json=spec, headers=headers, timeout=120)
    assert response.status_code == 200, response.text
    report = response.json()["report"]
    assert report["rel_error"] in (None, 0.0) and report["cancelled_modules"] > 0
    assert any("cancel" in w for w in report["warnings"])
    spec = {"names": ["rest/sql", "rest/child"], "method": "auto", "k": 4, "name": "rest/auto"}
    response = httpx.post(f"{live.url}/v1/merge", json=spec, headers=headers, timeout=120)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["auto"]["basis"] == "rule" and body["method"] == body["auto"]["method"]
    assert "no stored examples" in body["auto"]["reason"]


def test_merge_request_is_validated(live):
    headers = {"Authorization": f"Bearer {live.token}"}
    empty = httpx.post(f"{live.url}/v1/merge", json={"names": []}, headers=headers)
    assert empty.status_code == 422 and empty.json()["error"].startswith("invalid request: names: ")
    typo = httpx.post(f"{live.url}/v1/merge", json={"names": ["a/b"], "typo": 1}, headers=headers)
    assert typo.status_code == 422 and "typo" in typo.json()["error"]
    unknown = httpx.post(f"{live.url}/v1/merge", json={"names": ["rest/sql", "rest/chat"], "method": "nope"},
                         headers=headers)
    assert unknown.status_code == 422 and "lego" in unknown.json()["error"]  # lists the valid methods


@pytest.fixture(scope="module")
def locked(online, tmp_path_factory) -> Iterator[Live]:
    """A second server that requires a token for reads."""
    with live_hub(tmp_path_factory.mktemp("locked-home"), read_token_required=True) as server:
        server.hub.add_adapter(random_adapter(70), "lock/one")
        yield server


def test_read_token_required(locked, tmp_path):
    url, write, read = locked.url, locked.token, locked.read_token
    for path in ("/v1/adapters", "/api/models/lock/one", "/lock/one/resolve/main/adapter_config.json"):
        assert httpx.get(url + path).status_code == 401
        assert httpx.get(url + path, headers={"Authorization": "Bearer nope"}).status_code == 401
        assert httpx.get(url + path, headers={"Authorization": f"Bearer {read}"}).status_code == 200
    with pytest.raises((RepositoryNotFoundError, HfHubHTTPError)):
        snapshot_download("lock/one", endpoint=url, cache_dir=tmp_path / "a", token=False)
    folder = Path(snapshot_download("lock/one", endpoint=url, cache_dir=tmp_path / "b", token=read))
    assert (folder / "adapter_model.safetensors").is_file()
    # A read-only token cannot write.
    with pytest.raises(HfHubHTTPError):
        HfApi(endpoint=url, token=read).create_repo("lock/two")
    assert HfApi(endpoint=url, token=write).create_repo("lock/two").repo_id == "lock/two"


def test_private_repos_are_hidden_without_a_token(live, tmp_path):
    api = HfApi(endpoint=live.url, token=live.token)
    api.create_repo("rest/private", private=True)
    random_adapter(80).save(tmp_path / "p")
    api.upload_folder(repo_id="rest/private", folder_path=str(tmp_path / "p"))
    assert "rest/private" not in names(live.url)
    # a private repo answers as a missing one (404, not 401), so private names cannot be probed
    assert httpx.get(f"{live.url}/api/models/rest/private").status_code == 404
    assert httpx.get(f"{live.url}/v1/adapters/rest/private").status_code == 404
    assert HfApi(endpoint=live.url, token=live.read_token).model_info("rest/private").private is True
    listed = httpx.get(f"{live.url}/v1/adapters", headers={"Authorization": f"Bearer {live.read_token}"}).json()
    assert "rest/private" in [r["name"] for r in listed]
