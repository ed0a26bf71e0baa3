"""The facade's hub commit path without HTTP: what a commit stores, refuses and keeps."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapterhub.app import AdapterHub
from adapterhub.errors import (
    CommitConflictError,
    ForbiddenFileError,
    InvalidAdapterError,
    InvalidRepoPathError,
    RepoNotFoundError,
    UploadTooLargeError,
)
from adapterhub.hubformat import check_repo_path
from tests.helpers import write_random_adapter


def commit(hub: AdapterHub, repo: str, files: dict[str, bytes], **kwargs) -> str:
    with hub.hub_staging() as staging:
        for path, data in files.items():
            staging.add_bytes(path, data)
        return hub.hub_commit(repo, staging, **kwargs)


@pytest.fixture
def hub(tmp_path: Path):
    hub = AdapterHub(tmp_path / "home")
    yield hub
    hub.close()


@pytest.fixture
def files(tmp_path: Path) -> dict[str, bytes]:
    folder = write_random_adapter(tmp_path / "a", seed=3)
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_commit_creates_the_entry_then_revisions(hub, files):
    assert hub.hub_create_repo("acme/c")
    first = commit(hub, "acme/c", {**files, "README.md": b"# one\n"}, message="one")
    assert hub.get("acme/c").revision == first
    assert commit(hub, "acme/c", {**files, "README.md": b"# one\n"}) == first  # nothing changed
    second = commit(hub, "acme/c", {"README.md": b"# two\n"}, message="two", parent_commit=first[:8])
    assert [r.revision for r in hub.catalog.revisions("acme/c")] == [second, first]
    assert hub.hub_snapshot("acme/c", first).files["README.md"].read_small() == b"# one\n"
    assert hub.hub_snapshot("acme/c").files["README.md"].read_small() == b"# two\n"
    with pytest.raises(CommitConflictError, match="fetch the head"):
        commit(hub, "acme/c", {"README.md": b"# three\n"}, parent_commit=first)


def test_commit_refusals(hub, files):
    with pytest.raises(RepoNotFoundError):
        commit(hub, "acme/none", files)
    hub.hub_create_repo("acme/r")
    with pytest.raises(InvalidAdapterError, match="would not hold"):
        commit(hub, "acme/r", {"README.md": b"# no adapter\n"})
    with pytest.raises(ForbiddenFileError):
        commit(hub, "acme/r", {**files, "adapter_model.bin": b"\x80\x02}q\x00."})
    with hub.hub_staging(max_bytes=100) as staging, pytest.raises(UploadTooLargeError):
        staging.add_bytes("adapter_model.safetensors", files["adapter_model.safetensors"])
    assert not hub.catalog.exists("acme/r") and list(hub.blobs.digests()) == []


@pytest.mark.parametrize("path", ["", "/a", "a/../b", "..", "./a", "a//b", "a\\b", "C:x", ".git/x", "a\x00b", "x" * 1025])
def test_unsafe_repo_paths(path):
    with pytest.raises(InvalidRepoPathError):
        check_repo_path(path)


@pytest.mark.parametrize("path", ["README.md", "a/b/c.json", "weird name.txt", "dots.in.name", ".gitattributes"])
def test_safe_repo_paths(path):
    assert check_repo_path(path) == path


def test_gc_keeps_the_blobs_of_revision_files(hub, files):
    hub.hub_create_repo("acme/g")
    commit(hub, "acme/g", {**files, "README.md": b"# kept\n"})
    hub.gc(grace_seconds=0)
    assert hub.hub_snapshot("acme/g").files["README.md"].read_small() == b"# kept\n"


def test_staging_left_by_a_killed_server_is_removed_later(hub):
    import os

    stale = hub.settings.home / "uploads" / ".upload-killed"
    stale.mkdir(parents=True)
    (stale / "000001").write_bytes(b"half a file")
    os.utime(stale, (1, 1))
    fresh = hub.settings.home / "uploads" / ".upload-busy"
    fresh.mkdir()
    with hub.hub_staging():
        pass
    assert not stale.exists() and fresh.exists()
