"""The hub routes against the real huggingface_hub client (and raw HTTP where the client hides details)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import httpx
import pytest
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from adapterhub.lora import LoraAdapter
from tests.helpers import file_sha256, random_adapter, write_random_adapter

README = "---\nlibrary_name: peft\ntags:\n- demo\n---\n# a test card\n"


@pytest.fixture(scope="module")
def pushed(live, tmp_path_factory):
    """acme/proto: one commit from upload_folder (PEFT folder + README + a file in a subfolder)."""
    folder = write_random_adapter(tmp_path_factory.mktemp("proto") / "a", seed=1)
    (folder / "README.md").write_text(README)
    (folder / "extra").mkdir()
    (folder / "extra" / "notes.txt").write_text("notes\n")
    api = HfApi(endpoint=live.url, token=live.token)
    api.create_repo("acme/proto", exist_ok=True)
    info = api.upload_folder(repo_id="acme/proto", folder_path=str(folder), commit_message="first")
    return folder, info.oid


def test_upload_folder_then_snapshot_download_gives_the_files_back(live, pushed, tmp_path):
    folder, sha = pushed
    path = Path(snapshot_download("acme/proto", endpoint=live.url, cache_dir=tmp_path / "cache"))
    assert path.name == sha and len(sha) == 40
    assert sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()) == [
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
        "extra/notes.txt",
    ]
    assert (path / "README.md").read_text() == README
    assert (path / "extra" / "notes.txt").read_text() == "notes\n"
    # The weights are the canonical blob: same tensors as uploaded, digest = the catalog's digest.
    record = live.hub.get("acme/proto")
    assert file_sha256(path / "adapter_model.safetensors") == record.digest == LoraAdapter.load(folder).digest
    assert json.loads((path / "adapter_config.json").read_text()) == record.config
    assert record.revision == sha


def test_model_info_lists_sha_and_siblings_with_lfs_sha256(live, pushed):
    _, sha = pushed
    api = HfApi(endpoint=live.url)
    info = api.model_info("acme/proto", files_metadata=True)
    assert info.sha == sha and info.library_name == "peft" and info.private is False
    siblings = {s.rfilename: s for s in info.siblings}
    assert set(siblings) == {"README.md", "adapter_config.json", "adapter_model.safetensors", "extra/notes.txt"}
    weights = siblings["adapter_model.safetensors"]
    assert weights.lfs.sha256 == live.hub.get("acme/proto").digest and weights.size == weights.lfs.size
    assert siblings["README.md"].lfs is None and siblings["README.md"].size == len(README)
    assert api.model_info("acme/proto", revision=sha[:10]).sha == sha  # a unique prefix resolves
    with pytest.raises(RevisionNotFoundError):
        api.model_info("acme/proto", revision="f" * 40)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("acme/nothing-here")


def test_tree_listing_flat_and_recursive(live, pushed):
    api = HfApi(endpoint=live.url)
    flat = {(type(e).__name__, e.path) for e in api.list_repo_tree("acme/proto")}
    assert flat == {
        ("RepoFile", "README.md"),
        ("RepoFile", "adapter_config.json"),
        ("RepoFile", "adapter_model.safetensors"),
        ("RepoFolder", "extra"),
    }
    deep = sorted(e.path for e in api.list_repo_tree("acme/proto", recursive=True))
    assert deep == ["README.md", "adapter_config.json", "adapter_model.safetensors", "extra", "extra/notes.txt"]
    assert [e.path for e in api.list_repo_tree("acme/proto", path_in_repo="extra")] == ["extra/notes.txt"]
    readme = next(e for e in api.list_repo_tree("acme/proto") if e.path == "README.md")
    # A regular file's oid is git's blob id of its bytes, as on the Hugging Face hub.
    assert readme.blob_id == hashlib.sha1(b"blob %d\0" % len(README) + README.encode()).hexdigest()


def test_resolve_head_and_get_headers_and_ranges(live, pushed):
    _, sha = pushed
    record = live.hub.get("acme/proto")
    url = f"{live.url}/acme/proto/resolve/main/adapter_model.safetensors"
    head = httpx.head(url)
    assert head.status_code == 200
    assert head.headers["x-repo-commit"] == sha
    assert head.headers["etag"] == f'"{record.digest}"'
    assert int(head.headers["content-length"]) == record.size
    full = httpx.get(url)
    assert hashlib.sha256(full.content).hexdigest() == record.digest
    part = httpx.get(url, headers={"Range": "bytes=8-99"})
    assert part.status_code == 206 and part.content == full.content[8:100]
    assert part.headers["content-range"] == f"bytes 8-99/{record.size}"
    config = httpx.get(f"{live.url}/acme/proto/resolve/{sha}/adapter_config.json", headers={"Range": "bytes=-5"})
    assert config.status_code == 206 and len(config.content) == 5
    missing = httpx.head(f"{live.url}/acme/proto/resolve/main/nope.txt")
    assert missing.status_code == 404
    assert missing.headers["x-error-code"] == "EntryNotFound" and missing.headers["x-repo-commit"] == sha
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("acme/proto", "nope.txt", endpoint=live.url, cache_dir=str(live.home / "unused-cache"))


def test_each_commit_is_an_immutable_revision(live, tmp_path):
    api = HfApi(endpoint=live.url, token=live.token)
    api.create_repo("acme/revs")
    first = api.upload_folder(repo_id="acme/revs", folder_path=str(write_random_adapter(tmp_path / "1", seed=10)),
                              commit_message="one").oid
    second = api.upload_folder(repo_id="acme/revs", folder_path=str(write_random_adapter(tmp_path / "2", seed=11)),
                               commit_message="two").oid
    assert first != second
    old = hf_hub_download("acme/revs", "adapter_model.safetensors", revision=first, endpoint=live.url,
                          cache_dir=str(tmp_path / "c"))
    new = hf_hub_download("acme/revs", "adapter_model.safetensors", endpoint=live.url, cache_dir=str(tmp_path / "c"))
    assert file_sha256(Path(old)) == random_adapter(10).digest
    assert file_sha256(Path(new)) == random_adapter(11).digest == live.hub.get("acme/revs").digest
    assert [r.revision for r in live.hub.catalog.revisions("acme/revs")] == [second, first]
    # A commit that changes nothing adds no revision and answers the head.
    again = api.upload_folder(repo_id="acme/revs", folder_path=str(tmp_path / "2"), commit_message="same").oid
    assert again == second and len(live.hub.catalog.revisions("acme/revs")) == 2
    # upload_file of one file on top of the head keeps the adapter and adds a revision.
    third = api.upload_file(path_or_fileobj=b"hello\n", path_in_repo="NOTES.md", repo_id="acme/revs").oid
    files = {e.path for e in api.list_repo_tree("acme/revs", revision=third)}
    assert {"NOTES.md", "adapter_model.safetensors"} <= files
    assert "NOTES.md" not in {e.path for e in api.list_repo_tree("acme/revs", revision=second)}
    assert live.hub.get("acme/revs").digest == random_adapter(11).digest


def test_create_repo_conflict_and_exist_ok(live):
    api = HfApi(endpoint=live.url, token=live.token)
    url = api.create_repo("acme/twice")
    assert url.repo_id == "acme/twice"
    assert api.create_repo("acme/twice", exist_ok=True).repo_id == "acme/twice"
    with pytest.raises(HfHubHTTPError) as e:
        api.create_repo("acme/twice")
    assert e.value.response.status_code == 409
    # An empty repo has no commit yet.
    assert api.model_info("acme/twice").sha is None


def test_catalog_entries_added_locally_are_repos_with_a_generated_card(live, tmp_path):
    live.hub.add(write_random_adapter(tmp_path / "local", seed=5), "acme/local", task="demo-task", tags=["x"])
    path = Path(snapshot_download("acme/local", endpoint=live.url, cache_dir=tmp_path / "cache"))
    card = (path / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: peft\n") and "base_model_relation: adapter" in card
    assert "task: demo-task" in card
    assert file_sha256(path / "adapter_model.safetensors") == live.hub.get("acme/local").digest


def test_invalid_model_card_front_matter_is_refused(live, tmp_path):
    api = HfApi(endpoint=live.url, token=live.token)
    api.create_repo("acme/badcard")
    folder = write_random_adapter(tmp_path / "a", seed=2)
    (folder / "README.md").write_text("---\ntags: [unclosed\n---\n")
    with pytest.raises(ValueError, match="Invalid metadata in README.md"):
        api.upload_folder(repo_id="acme/badcard", folder_path=str(folder))
    assert not live.hub.catalog.exists("acme/badcard")


def test_openapi_docs_are_served(live):
    assert httpx.get(f"{live.url}/docs").status_code == 200
    paths = httpx.get(f"{live.url}/openapi.json").json()["paths"]
    assert "/v1/adapters" in paths and "/api/models/{namespace}/{name}/commit/{revision}" in paths
