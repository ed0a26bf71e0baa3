"""A hub returns exactly the bytes it was given (issue 9, item 10), with the real client.

PEFT writes its safetensors with its own key order and metadata, and its config with its own
layout: neither is what the catalog's canonical serialisation gives. The server keeps the uploaded
bytes as the served file, so ``snapshot_download`` is byte-identical to the folder uploaded and
``upload_folder`` of an unchanged folder is no commit; the catalog keeps the canonical digest
(``pull``, ``export``, dedup and lineage use it).
"""

from __future__ import annotations

import filecmp
import hashlib
import json
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi, constants, snapshot_download
from typer.testing import CliRunner

from adapterhub.lora import CONFIG_NAME, WEIGHTS_NAME, LoraAdapter
from tests.helpers import make_peft_adapter
from tests.server.test_peft_e2e import local_logits, logits_from_hub

REPO = "acme/byte-exact"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_identical(downloaded: Path, uploaded: Path) -> None:
    """Every uploaded file comes back byte for byte (the served README is the uploaded one too)."""
    uploaded_files = sorted(p.name for p in uploaded.iterdir() if p.is_file())
    for name in uploaded_files:
        assert filecmp.cmp(downloaded / name, uploaded / name, shallow=False), name


@pytest.fixture(scope="module")
def uploaded(live, tmp_path_factory):
    """A PEFT folder written by PEFT itself (with a README), uploaded with ``upload_folder``."""
    root = tmp_path_factory.mktemp("byte-exact")
    with pytest.MonkeyPatch.context() as mp:  # PEFT's save looks up the base model on the hub: stay offline
        mp.setattr(constants, "HF_HUB_OFFLINE", True)
        _, folder = make_peft_adapter(root / "peft", seed=11, rank_pattern={"layer.1.attention.self.value": 2})
    (folder / "README.md").write_text("---\nlibrary_name: peft\n---\n# my adapter\n", encoding="utf-8")
    api = HfApi(endpoint=live.url, token=live.token)
    api.create_repo(REPO)
    info = api.upload_folder(repo_id=REPO, folder_path=str(folder))
    return api, folder, info.oid


def test_peft_files_are_not_canonical_to_begin_with(uploaded):
    """The premise: without keeping the uploaded bytes, the served files would differ."""
    _, folder, _ = uploaded
    adapter = LoraAdapter.load(folder)
    assert sha256(folder / WEIGHTS_NAME) != adapter.digest
    assert (folder / CONFIG_NAME).read_text() != adapter.config.to_json()


def test_snapshot_download_is_byte_identical(live, uploaded, tmp_path):
    api, folder, sha = uploaded
    downloaded = Path(snapshot_download(REPO, endpoint=live.url, token=live.token, cache_dir=tmp_path / "c"))
    assert_identical(downloaded, folder)
    listed = {s.rfilename: s for s in api.model_info(REPO, files_metadata=True).siblings}
    assert listed[WEIGHTS_NAME].lfs.sha256 == sha256(folder / WEIGHTS_NAME)
    assert api.model_info(REPO).sha == sha


def test_the_catalog_keeps_the_canonical_digest(live, uploaded, tmp_path):
    _, folder, _ = uploaded
    canonical = LoraAdapter.load(folder)
    record = live.hub.get(REPO)
    assert record.digest == canonical.digest and live.hub.blobs.verify(record.digest)
    exported = live.hub.export(REPO, tmp_path / "exported")  # export writes the canonical bytes
    assert sha256(exported / WEIGHTS_NAME) == record.digest


def test_uploading_the_same_folder_again_is_no_commit(live, uploaded):
    api, folder, sha = uploaded
    before = [c.commit_id for c in api.list_repo_commits(REPO)]
    again = api.upload_folder(repo_id=REPO, folder_path=str(folder))
    assert again.oid == sha
    assert [c.commit_id for c in api.list_repo_commits(REPO)] == before
    # the server agrees when the client sends the files anyway (it would skip an empty commit)
    api.upload_file(path_or_fileobj=str(folder / WEIGHTS_NAME), path_in_repo=WEIGHTS_NAME, repo_id=REPO)
    api.upload_file(path_or_fileobj=str(folder / CONFIG_NAME), path_in_repo=CONFIG_NAME, repo_id=REPO)
    assert [c.commit_id for c in api.list_repo_commits(REPO)] == before


@pytest.mark.slow
def test_peft_loads_through_the_server_with_the_local_logits(live, uploaded, tmp_path, input_ids):
    _, folder, _ = uploaded
    from_hub = logits_from_hub(live.url, REPO, tmp_path)
    assert torch.equal(from_hub, local_logits(folder, input_ids))


def test_pull_imports_the_canonical_adapter(live, uploaded, tmp_path, monkeypatch):
    from adapterhub.cli.main import app

    _, folder, sha = uploaded
    monkeypatch.setenv("ADAPTERHUB_HOME", str(tmp_path / "cli-home"))
    pulled = CliRunner().invoke(app, ["pull", REPO, "--endpoint", live.url, "--token", live.token, "--json"])
    assert pulled.exit_code == 0, pulled.output
    record = json.loads(pulled.stdout)
    assert record["digest"] == LoraAdapter.load(folder).digest == live.hub.get(REPO).digest
    assert record["source_revision"] == sha


def test_a_card_only_commit_keeps_the_uploaded_weights(live, tmp_path):
    repo = "acme/byte-exact-card"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(constants, "HF_HUB_OFFLINE", True)
        _, folder = make_peft_adapter(tmp_path / "peft", seed=12)
    api = HfApi(endpoint=live.url, token=live.token)
    api.create_repo(repo)
    api.upload_folder(repo_id=repo, folder_path=str(folder))
    (folder / "README.md").write_text("# changed card\n", encoding="utf-8")
    api.upload_file(path_or_fileobj=str(folder / "README.md"), path_in_repo="README.md", repo_id=repo)
    assert len(api.list_repo_commits(repo)) == 2
    downloaded = Path(snapshot_download(repo, endpoint=live.url, token=live.token, cache_dir=tmp_path / "c"))
    assert_identical(downloaded, folder)


def test_canonical_bytes_over_uploaded_ones_are_a_new_commit(live, tmp_path):
    """Same tensors, other bytes: the served file changes, so it is a commit (as on the HF hub);
    the catalog digest stays, and the canonical file needs no second blob."""
    repo = "acme/byte-exact-canonical"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(constants, "HF_HUB_OFFLINE", True)
        _, folder = make_peft_adapter(tmp_path / "peft", seed=13)
    api = HfApi(endpoint=live.url, token=live.token)
    api.create_repo(repo)
    api.upload_folder(repo_id=repo, folder_path=str(folder))
    digest = live.hub.get(repo).digest
    canonical = live.hub.export(repo, tmp_path / "canonical")
    api.upload_folder(repo_id=repo, folder_path=str(canonical))
    assert len(api.list_repo_commits(repo)) == 2
    assert live.hub.get(repo).digest == digest
    snapshot = live.hub.hub_snapshot(repo)
    assert snapshot.files[WEIGHTS_NAME].sha256 == digest
    downloaded = Path(snapshot_download(repo, endpoint=live.url, token=live.token, cache_dir=tmp_path / "c"))
    assert_identical(downloaded, canonical)


@pytest.mark.parametrize("existing", [False, True], ids=["new-entry", "new-revision"])
def test_a_refused_commit_leaves_no_uploaded_bytes_behind(tmp_path, existing):
    """The uploaded-bytes blobs are written with the commit's other blobs: when the transaction
    fails after they were written, they are removed again and no revision appears."""
    from adapterhub.app import AdapterHub
    from adapterhub.store import Catalog

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(constants, "HF_HUB_OFFLINE", True)
        _, first = make_peft_adapter(tmp_path / "first", seed=14)
        _, second = make_peft_adapter(tmp_path / "second", seed=15)

    def commit(hub: AdapterHub, folder: Path) -> str:
        with hub.hub_staging() as staging:
            for name in (CONFIG_NAME, WEIGHTS_NAME):
                staging.add_bytes(name, (folder / name).read_bytes())
            return hub.hub_commit("acme/r", staging)

    with AdapterHub(tmp_path / "home") as hub:
        hub.hub_create_repo("acme/r")
        if existing:
            commit(hub, first)
        blobs_before = set(hub.blobs.digests())
        revisions_before = [r.revision for r in hub.catalog.revisions("acme/r")] if existing else []
        with Catalog("sqlite://").transaction() as probe:
            writer_class = type(probe)

        def fail(self, *a, **k):
            raise RuntimeError("injected failure")

        with pytest.MonkeyPatch.context() as mp, pytest.raises(RuntimeError, match="injected"):
            mp.setattr(writer_class, "add_revision_files", fail)
            commit(hub, second)
        assert set(hub.blobs.digests()) == blobs_before
        assert hub.catalog.exists("acme/r") is existing
        if existing:
            assert [r.revision for r in hub.catalog.revisions("acme/r")] == revisions_before
        commit(hub, second)  # and the same commit then goes through, byte-exact
        served = hub.hub_snapshot("acme/r").files
        assert served[WEIGHTS_NAME].sha256 == sha256(second / WEIGHTS_NAME)
        assert served[CONFIG_NAME].sha256 == sha256(second / CONFIG_NAME)
        assert hub.get("acme/r").digest == LoraAdapter.load(second).digest
