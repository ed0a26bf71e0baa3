"""Item 3 of issue 9, replayed against a real server: a merge of a private repo.

Only a reader of every parent may merge; the result is at least as private as its most private
parent (a private hub repo row exists before the entry does), and its model card, lineage and
``/v1`` show reach nobody else. Parents and children that a reader may not see are hidden in the
lineage and show of adapters they may see.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from huggingface_hub import HfApi

from adapterhub.store import LineageRecord, hub_catalog
from tests.helpers import Live, random_adapter, store_state


def _auth(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


@pytest.fixture(scope="module")
def tokens(live: Live, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    hub = live.hub
    made = {who: hub.create_token(name=who)["token"] for who in ("alice", "bob")}
    folder = tmp_path_factory.mktemp("adapters")
    random_adapter(11).save(folder / "p")
    api = HfApi(endpoint=live.url, token=made["alice"])
    api.create_repo("alice/private-parent", private=True)
    api.upload_folder(repo_id="alice/private-parent", folder_path=str(folder / "p"))
    hub.add_adapter(random_adapter(12), "alice/public-parent", task="sql")
    hub.add_adapter(random_adapter(13), "bob/public", task="chat")
    yield made


def _merge(live: Live, token: str | None, names: list[str], name: str | None = None) -> httpx.Response:
    spec = {"names": names, "method": "linear", **({"name": name} if name else {})}
    return httpx.post(f"{live.url}/v1/merge", json=spec, headers=_auth(token), timeout=120)


def test_an_outsider_cannot_merge_a_private_parent(live: Live, tokens: dict[str, str]) -> None:
    before = store_state(live.home), hub_catalog.private_repo_names(live.hub.catalog)
    hidden = _merge(live, tokens["bob"], ["alice/private-parent", "bob/public"], "bob/stolen")
    missing = _merge(live, tokens["bob"], ["alice/no-such-parent", "bob/public"], "bob/stolen")
    assert hidden.status_code == missing.status_code == 404
    assert hidden.headers["x-error-code"] == missing.headers["x-error-code"] == "RepoNotFound"
    assert hidden.text.replace("private-parent", "X") == missing.text.replace("no-such-parent", "X")
    assert _merge(live, None, ["alice/private-parent", "bob/public"], "bob/stolen").status_code == 401
    assert not live.hub.catalog.exists("bob/stolen")
    assert (store_state(live.home), hub_catalog.private_repo_names(live.hub.catalog)) == before


def test_the_result_goes_only_into_a_namespace_the_token_writes(live: Live, tokens: dict[str, str]) -> None:
    before = store_state(live.home)
    response = _merge(live, tokens["bob"], ["alice/public-parent", "bob/public"], "alice/by-bob")
    assert response.status_code == 403
    assert store_state(live.home) == before


def test_a_merge_of_a_private_parent_is_private_and_hidden(live: Live, tokens: dict[str, str]) -> None:
    response = _merge(live, tokens["alice"], ["alice/private-parent", "alice/public-parent"], "alice/merged")
    assert response.status_code == 200, response.text
    repo = hub_catalog.get_repo(live.hub.catalog, "alice/merged")
    assert repo is not None and repo.private
    for token in (None, tokens["bob"]):
        for route in ("/api/models/alice/merged", "/alice/merged/resolve/main/README.md",
                      "/v1/adapters/alice/merged", "/v1/adapters/alice/merged/lineage",
                      "/api/models/alice/merged/tree/main"):
            assert httpx.get(live.url + route, headers=_auth(token)).status_code == 404, route
        listed = httpx.get(f"{live.url}/v1/adapters", headers=_auth(token)).json()
        assert "alice/merged" not in [r["name"] for r in listed]
        # the public parent's show does not name its private child
        shown = httpx.get(f"{live.url}/v1/adapters/alice/public-parent", headers=_auth(token)).json()
        assert "alice/merged" not in shown["children"]
    # the owner sees all of it, the private parent included
    assert HfApi(endpoint=live.url, token=tokens["alice"]).model_info("alice/merged").private is True
    tree = httpx.get(f"{live.url}/v1/adapters/alice/merged/lineage", headers=_auth(tokens["alice"])).json()
    assert {p["name"] for p in tree["parents"]} == {"alice/private-parent", "alice/public-parent"}
    shown = httpx.get(f"{live.url}/v1/adapters/alice/public-parent", headers=_auth(tokens["alice"])).json()
    assert "alice/merged" in shown["children"]


def test_a_default_name_goes_to_the_owners_namespace_and_stays_private(live: Live, tokens: dict[str, str]) -> None:
    response = _merge(live, tokens["alice"], ["alice/private-parent", "bob/public"])
    assert response.status_code == 200, response.text
    name = response.json()["repo_id"]
    assert name.startswith("alice/linear-")
    assert httpx.get(f"{live.url}/api/models/{name}").status_code == 404
    assert httpx.get(f"{live.url}/api/models/{name}", headers=_auth(tokens["alice"])).status_code == 200


def test_a_private_result_cannot_land_in_a_public_repo(live: Live, tokens: dict[str, str]) -> None:
    HfApi(endpoint=live.url, token=tokens["alice"]).create_repo("alice/open")
    before = store_state(live.home)
    response = _merge(live, tokens["alice"], ["alice/private-parent", "alice/public-parent"], "alice/open")
    assert response.status_code == 409
    assert store_state(live.home) == before
    assert not hub_catalog.get_repo(live.hub.catalog, "alice/open").private


def test_lineage_hides_private_ancestors_from_other_readers(live: Live, tokens: dict[str, str]) -> None:
    # the operator (CLI) may derive a public adapter from a private one; others still see no name
    parent = live.hub.get("alice/private-parent")
    live.hub.add_adapter(random_adapter(14), "ops/public-child", lineage=[
        LineageRecord(parent_name="alice/private-parent", operation="merge:linear", parent_digest=parent.digest,
                      weight=1.0)])
    for token in (None, tokens["bob"]):
        tree = httpx.get(f"{live.url}/v1/adapters/ops/public-child/lineage", headers=_auth(token))
        shown = httpx.get(f"{live.url}/v1/adapters/ops/public-child", headers=_auth(token))
        assert tree.status_code == shown.status_code == 200
        assert "private-parent" not in tree.text and parent.digest not in tree.text
        assert "private-parent" not in shown.text and parent.digest not in shown.text
        assert tree.json()["parents"][0]["hidden"] is True
    owner = httpx.get(f"{live.url}/v1/adapters/ops/public-child/lineage", headers=_auth(tokens["alice"])).json()
    assert owner["parents"][0]["name"] == "alice/private-parent"
    # the generated model card is one file for every reader: it does not name the private parent
    for token in (None, tokens["bob"], tokens["alice"]):
        card = httpx.get(f"{live.url}/ops/public-child/resolve/main/README.md", headers=_auth(token))
        assert card.status_code == 200 and "private-parent" not in card.text and parent.digest not in card.text
    # a private repo's card names its private parents of the same namespace (its readers may read them)
    card = httpx.get(f"{live.url}/alice/merged/resolve/main/README.md", headers=_auth(tokens["alice"]))
    assert card.status_code == 200 and "alice/private-parent" in card.text
