"""The hub routes the client calls beyond push and pull (issue 9, item 13), with the real
``huggingface_hub`` client against a live server: list_repo_commits, list_models, list_repo_refs,
delete_file/delete_folder through the commit API, delete_repo."""

from __future__ import annotations

import httpx
import pytest
from huggingface_hub import CommitOperationAdd, HfApi
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

from tests.helpers import write_random_adapter


@pytest.fixture(scope="module")
def api(live):  # type: ignore[no-untyped-def]
    return HfApi(endpoint=live.url, token=live.token)


def _adapter_ops(tmp_path, seed: int = 0) -> list[CommitOperationAdd]:  # type: ignore[no-untyped-def]
    folder = write_random_adapter(tmp_path / f"adapter-{seed}", seed=seed)
    return [CommitOperationAdd(p.name, p.read_bytes()) for p in sorted(folder.iterdir())]


def test_list_repo_commits_newest_first_from_any_revision(api, tmp_path):
    repo = "more/history"
    api.create_repo(repo)
    first = api.create_commit(repo, _adapter_ops(tmp_path), commit_message="first").oid
    second = api.create_commit(repo, [CommitOperationAdd("a.json", b"{}")], commit_message="add a\n\nwhy a").oid
    third = api.upload_file(path_or_fileobj=b"[]", path_in_repo="b.json", repo_id=repo).oid

    commits = api.list_repo_commits(repo)
    assert [c.commit_id for c in commits] == [third, second, first]
    assert commits[1].title == "add a" and commits[1].message == "why a"
    assert commits[0].created_at >= commits[1].created_at >= commits[2].created_at
    assert [c.commit_id for c in api.list_repo_commits(repo, revision=second)] == [second, first]
    assert [c.commit_id for c in api.list_repo_commits(repo, revision=first[:12])] == [first]
    with pytest.raises(RevisionNotFoundError):
        api.list_repo_commits(repo, revision="0" * 40)
    with pytest.raises(RepositoryNotFoundError):
        api.list_repo_commits("more/missing")


def test_list_repo_refs_names_main_at_the_head(api, tmp_path):
    repo = "more/refs"
    api.create_repo(repo)
    assert api.list_repo_refs(repo).branches == []  # empty: nothing committed yet
    head = api.create_commit(repo, _adapter_ops(tmp_path), commit_message="c").oid
    refs = api.list_repo_refs(repo, include_pull_requests=True)
    assert [(b.name, b.ref, b.target_commit) for b in refs.branches] == [("main", "refs/heads/main", head)]
    assert refs.tags == [] and refs.converts == [] and refs.pull_requests == []
    with pytest.raises(RepositoryNotFoundError):
        api.list_repo_refs("more/missing-refs")


def test_list_models_filters_and_hides_private_repos(live, api, tmp_path):
    api.create_repo("listing/alpha-sql")
    api.create_commit("listing/alpha-sql", _adapter_ops(tmp_path, 1), commit_message="c")
    live.hub.catalog.update("listing/alpha-sql", tags=["sql"])
    api.create_repo("listing/beta-chat")
    api.create_commit("listing/beta-chat", _adapter_ops(tmp_path, 2), commit_message="c")
    api.create_repo("listing/secret-sql", private=True)
    api.create_repo("elsewhere/alpha-other")

    def ids(client: HfApi, **kwargs) -> list[str]:  # type: ignore[no-untyped-def]
        return [m.id for m in client.list_models(**kwargs)]

    assert ids(api, author="listing") == ["listing/alpha-sql", "listing/beta-chat", "listing/secret-sql"]
    assert ids(api, search="ALPHA") == ["elsewhere/alpha-other", "listing/alpha-sql"]
    assert ids(api, author="listing", filter="sql") == ["listing/alpha-sql"]
    assert ids(api, author="listing", filter=["peft", "lora"]) == ids(api, author="listing")
    assert ids(api, filter="base_model:tiny-bert", author="listing") == ["listing/alpha-sql", "listing/beta-chat"]
    assert ids(api, author="listing", filter="library:none") == []
    assert ids(api, author="listing", limit=1) == ["listing/alpha-sql"]
    by_library = {
        library: httpx.get(f"{live.url}/api/models", params={"author": "listing", "library": library})
        for library in ("peft", "timm")
    }
    assert [m["id"] for m in by_library["peft"].json()] == ["listing/alpha-sql", "listing/beta-chat"]
    assert by_library["timm"].json() == []
    info = next(iter(api.list_models(author="listing", search="alpha-sql")))
    assert info.sha == api.model_info("listing/alpha-sql").sha and info.private is False
    assert info.library_name == "peft" and "sql" in info.tags
    # readers without access do not see the private repo (nor its name), as on the HF hub
    anonymous = HfApi(endpoint=live.url, token=False)
    assert ids(anonymous, author="listing") == ["listing/alpha-sql", "listing/beta-chat"]
    stranger = HfApi(endpoint=live.url, token=live.hub.create_token(name="stranger")["token"])
    assert "listing/secret-sql" not in ids(stranger, search="secret")


def test_list_models_pages_with_a_link_header(live, monkeypatch):
    from adapterhub.server import hub_listing

    monkeypatch.setattr(hub_listing, "PAGE_SIZE", 2)
    for i in range(5):
        live.hub.hub_create_repo(f"paged/r{i}")
    api = HfApi(endpoint=live.url, token=live.token)
    assert [m.id for m in api.list_models(author="paged")] == [f"paged/r{i}" for i in range(5)]
    assert [m.id for m in api.list_models(author="paged", limit=3)] == ["paged/r0", "paged/r1", "paged/r2"]


def test_delete_file_and_folder_through_the_commit_api(api, tmp_path):
    repo = "more/deletions"
    api.create_repo(repo)
    api.create_commit(
        repo,
        [*_adapter_ops(tmp_path), *(CommitOperationAdd(p, b"{}") for p in ("x.json", "docs/a.json", "docs/b/c.json"))],
        commit_message="c",
    )
    api.delete_file("x.json", repo)
    assert "x.json" not in api.list_repo_files(repo)
    api.delete_folder("docs", repo)
    files = api.list_repo_files(repo)
    assert not [f for f in files if f.startswith("docs/")] and "adapter_model.safetensors" in files
    head = api.model_info(repo).sha
    with pytest.raises(EntryNotFoundError):
        api.delete_file("x.json", repo)  # gone already: 404, as on the HF hub
    with pytest.raises(EntryNotFoundError):
        api.delete_folder("docs", repo)
    with pytest.raises(HfHubHTTPError) as refused:
        api.delete_file("adapter_model.safetensors", repo)  # a repo here is an adapter: refused whole
    assert refused.value.response.status_code == 422
    assert api.model_info(repo).sha == head  # nothing changed by the refused deletions


def test_delete_repo_needs_write_access_and_leaves_blobs_for_gc(live, api, tmp_path):
    repo = "more/doomed"
    api.create_repo(repo)
    ops = [*_adapter_ops(tmp_path, 7), CommitOperationAdd("README.md", b"# doomed\n")]
    api.create_commit(repo, ops, commit_message="c")
    digest = live.hub.get(repo).digest
    with pytest.raises(HfHubHTTPError) as anonymous:
        HfApi(endpoint=live.url, token=False).delete_repo(repo)
    assert anonymous.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError) as read_only:
        HfApi(endpoint=live.url, token=live.read_token).delete_repo(repo)
    assert read_only.value.response.status_code == 403
    assert api.model_info(repo).sha  # still there

    api.delete_repo(repo)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info(repo)
    assert not live.hub.catalog.exists(repo) and repo not in [m.id for m in api.list_models(author="more")]
    assert live.hub.blobs.has(digest)  # blobs stay until gc (a download may still be streaming one)
    with pytest.raises(RepositoryNotFoundError):
        api.delete_repo(repo)
    api.delete_repo(repo, missing_ok=True)
    api.create_repo(repo)  # the name is free again
    assert api.model_info(repo).sha is None
