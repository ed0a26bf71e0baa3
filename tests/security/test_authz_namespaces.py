"""Items 4, 5 and 9 of issue 9, replayed against a real server: tokens have owners and scopes,
private repos answer exactly like missing ones, and refusals carry the HF hub's status codes.

Each attack checks the status and that nothing was written (catalog, blobs, hub repo rows).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from huggingface_hub import CommitOperationAdd, HfApi
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

from adapterhub.store import hub_catalog
from tests.helpers import Live, random_adapter, store_state


@dataclass(frozen=True)
class World:
    """A live server with repos of two owners and tokens of several kinds."""

    live: Live
    alice: str  # owns alice/
    alice_ro: str  # owns alice/, read-only
    bob: str  # owns bob/
    carol: str  # owns carol/, granted alice/


def _auth(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def _state(live: Live) -> tuple[object, ...]:
    """Catalog, blobs and hub repo rows: what an attack must not change."""
    rows = {n: hub_catalog.get_repo(live.hub.catalog, n) for n in ("alice/new", "bob/x", "alice/m")}
    return store_state(live.home), sorted(hub_catalog.private_repo_names(live.hub.catalog)), rows


@pytest.fixture(scope="module")
def world(live: Live, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    hub = live.hub
    tokens = {
        "alice": hub.create_token(name="alice")["token"],  # owner defaults to the name
        "alice_ro": hub.create_token(name="alice-ro", owner="alice", write=False)["token"],
        "bob": hub.create_token(name="bob")["token"],
        "carol": hub.create_token(name="carol", namespaces=["alice"])["token"],
    }
    folder = tmp_path_factory.mktemp("adapters")
    random_adapter(1).save(folder / "one")
    random_adapter(2).save(folder / "two")
    api = HfApi(endpoint=live.url, token=tokens["alice"])
    api.create_repo("alice/public")
    api.upload_folder(repo_id="alice/public", folder_path=str(folder / "one"))
    api.create_repo("alice/secret", private=True)
    api.upload_folder(repo_id="alice/secret", folder_path=str(folder / "two"))
    hub.add_adapter(random_adapter(3), "ops/cli-entry")  # the operator's CLI: local, unchecked
    yield World(live, **tokens)


def _commit(api: HfApi, repo_id: str, **kwargs: object) -> object:
    return api.create_commit(
        repo_id, [CommitOperationAdd("notes.txt", b"overwritten")], commit_message="attack", **kwargs
    )


# -- item 4: writes only into the token's namespaces ----------------------------------------------


def test_a_token_cannot_create_or_commit_in_another_namespace(world: World) -> None:
    live = world.live
    before = _state(live)
    bob = HfApi(endpoint=live.url, token=world.bob)
    for repo_id in ("alice/new", "alice/public", "ops/cli-entry"):
        with pytest.raises(HfHubHTTPError) as e:
            bob.create_repo(repo_id)
        assert e.value.response.status_code == 403
    for repo_id in ("alice/public", "ops/cli-entry"):  # public: visible, so forbidden (403), not hidden
        with pytest.raises(HfHubHTTPError) as e:
            _commit(bob, repo_id)
        assert e.value.response.status_code == 403
        assert "bob" in e.value.response.json()["error"]  # names what the token may write
        response = httpx.post(f"{live.url}/api/models/{repo_id}/preupload/main", headers=_auth(world.bob),
                              json={"files": [{"path": "notes.txt", "size": 1, "sample": ""}]})
        assert response.status_code == 403
    assert _state(live) == before


def test_the_cli_entry_keeps_its_single_revision(world: World) -> None:
    with pytest.raises(HfHubHTTPError):
        HfApi(endpoint=world.live.url, token=world.bob).upload_file(
            path_or_fileobj=b"{}", path_in_repo="adapter_config.json", repo_id="ops/cli-entry"
        )
    assert len(world.live.hub.catalog.revisions("ops/cli-entry")) == 1


def test_owners_and_granted_tokens_write_their_namespaces(world: World) -> None:
    live = world.live
    carol = HfApi(endpoint=live.url, token=world.carol)
    assert carol.create_repo("carol/own").repo_id == "carol/own"
    head = HfApi(endpoint=live.url, token=world.alice).model_info("alice/public").sha
    _commit(carol, "alice/public")  # alice/ was granted to carol
    assert HfApi(endpoint=live.url, token=world.alice).model_info("alice/public").sha != head


def test_a_read_only_token_gets_403_even_in_its_own_namespace(world: World) -> None:
    live = world.live
    before = _state(live)
    ro = HfApi(endpoint=live.url, token=world.alice_ro)
    for call in (lambda: ro.create_repo("alice/new"), lambda: _commit(ro, "alice/public"),
                 lambda: _commit(ro, "alice/secret")):
        with pytest.raises(HfHubHTTPError) as e:
            call()
        assert e.value.response.status_code == 403 and "read-only" in e.value.response.json()["error"]
    merge = httpx.post(f"{live.url}/v1/merge", headers=_auth(world.alice_ro),
                       json={"names": ["alice/public", "alice/secret"], "method": "linear", "name": "alice/m"})
    assert merge.status_code == 403
    assert _state(live) == before


# -- item 4 and 5: private reads only for owners, granted and admin tokens; 404 like a missing repo --

_READ_ROUTES = (
    "/api/models/{repo}",
    "/api/models/{repo}/revision/main",
    "/api/models/{repo}/tree/main",
    "/{repo}/resolve/main/adapter_config.json",
    "/{repo}/resolve/main/README.md",
    "/v1/adapters/{repo}",
    "/v1/adapters/{repo}/lineage",
)


def _answer(response: httpx.Response, repo: str) -> tuple[object, ...]:
    """Everything a prober can see, with the repo's name taken out."""
    body = response.text.replace(repo, "REPO")
    return response.status_code, response.headers.get("x-error-code"), body, \
        response.headers.get("x-error-message", "").replace(repo, "REPO")


@pytest.mark.parametrize("who", ["anonymous", "bob", "bob-read-only"])
def test_a_private_repo_answers_exactly_like_a_missing_one(world: World, who: str) -> None:
    live = world.live
    token = {"anonymous": None, "bob": world.bob,
             "bob-read-only": live.hub.create_token(name=f"bob-ro-{who}", owner="bob", write=False)["token"]}[who]
    for route in _READ_ROUTES:
        for method in ("GET", "HEAD") if "resolve" in route else ("GET",):
            hidden = httpx.request(method, live.url + route.format(repo="alice/secret"), headers=_auth(token))
            missing = httpx.request(method, live.url + route.format(repo="alice/absent"), headers=_auth(token))
            assert hidden.status_code == 404, (route, method)
            assert _answer(hidden, "alice/secret") == _answer(missing, "alice/absent"), (route, method)
    if token is not None:  # the write routes too: a hidden repo is a missing one, not a forbidden one
        for route in ("/api/models/{repo}/preupload/main", "/api/models/{repo}/commit/main"):
            hidden = httpx.post(live.url + route.format(repo="alice/secret"), headers=_auth(token), json={"files": []})
            missing = httpx.post(live.url + route.format(repo="alice/absent"), headers=_auth(token), json={"files": []})
            assert hidden.status_code == 404
            assert _answer(hidden, "alice/secret") == _answer(missing, "alice/absent"), route
    listed = httpx.get(f"{live.url}/v1/adapters", headers=_auth(token)).json()
    assert "alice/secret" not in [r["name"] for r in listed]
    with pytest.raises(RepositoryNotFoundError):
        HfApi(endpoint=live.url, token=token or False).model_info("alice/secret")


def test_owner_granted_and_admin_tokens_read_the_private_repo(world: World, tmp_path: Path) -> None:
    live = world.live
    for token in (world.alice, world.alice_ro, world.carol, live.read_token, live.token):
        assert HfApi(endpoint=live.url, token=token).model_info("alice/secret").private is True
        assert httpx.get(f"{live.url}/v1/adapters/alice/secret", headers=_auth(token)).status_code == 200
        listed = httpx.get(f"{live.url}/v1/adapters", headers=_auth(token)).json()
        assert "alice/secret" in [r["name"] for r in listed]
    page = httpx.get(f"{live.url}/v1/adapters", params={"limit": 1, "q": "secret"}, headers=_auth(world.bob))
    assert page.json() == []


def test_token_scopes_are_listed(world: World) -> None:
    tokens = {t["name"]: t for t in world.live.hub.list_tokens()}
    assert (tokens["alice"]["owner"], tokens["alice"]["namespaces"], tokens["alice"]["admin"]) == ("alice", [], False)
    assert tokens["carol"]["namespaces"] == ["alice"] and tokens["alice-ro"]["scope"] == "read"
    assert tokens["writer"]["admin"] is True  # the fixture's operator token


# -- item 9: the HF hub's status codes -------------------------------------------------------------


def test_stale_parent_commit_is_412_and_an_existing_repo_409(world: World) -> None:
    live = world.live
    alice = HfApi(endpoint=live.url, token=world.alice)
    old = alice.model_info("alice/public").sha
    _commit(alice, "alice/public", parent_commit=old)  # moves the head (notes.txt changes)
    alice.upload_file(path_or_fileobj=b"v3", path_in_repo="notes.txt", repo_id="alice/public")
    before = _state(live)
    with pytest.raises(HfHubHTTPError) as e:
        alice.create_commit("alice/public", [CommitOperationAdd("late.txt", b"x")], commit_message="late",
                            parent_commit=old)
    assert e.value.response.status_code == 412
    with pytest.raises(HfHubHTTPError) as e:
        alice.create_repo("alice/public")
    assert e.value.response.status_code == 409
    assert _state(live) == before
