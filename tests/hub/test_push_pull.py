"""Push from one adapterhub home to a live server, pull into another: same digests and lineage."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
from pathlib import Path

import httpx2
import pytest
import torch
from huggingface_hub import errors as hf_errors
from typer.testing import CliRunner

from adapterhub.app import AdapterHub
from adapterhub.app.ingest import received_weights
from adapterhub.errors import AdapterExistsError, AuthError, HubError, InvalidAdapterError
from adapterhub.lora import LoraAdapter
from adapterhub.lora.tensorfile import DictSource
from adapterhub.hubformat import parse_card
from adapterhub.store import LineageRecord
from adapterhub.store.hub_client import HubClient
from tests.helpers import random_adapter, write_random_adapter

NAMES = ["acme/p1", "acme/p2", "acme/child"]


def lineage_rows(hub: AdapterHub, name: str) -> list[tuple]:
    return [(p.parent_name, p.operation, p.parent_digest, p.params, p.weight, p.position) for p in hub.catalog.lineage(name)]


def describe(hub: AdapterHub, name: str) -> dict:
    r = hub.get(name)
    return {
        "digest": r.digest,
        "size": r.size,
        "config": r.config,
        "task": r.task,
        "tags": r.tags,
        "description": r.description,
        "lineage": lineage_rows(hub, name),
        "metrics": [(m.task, m.split, m.metric, m.value) for m in hub.catalog.metrics(name)],
    }


@pytest.fixture(scope="module")
def homes(live, tmp_path_factory):
    """Home A with two parents and a merged child (lineage + metrics), pushed; home B pulled them."""
    root = tmp_path_factory.mktemp("homes")
    a, b = AdapterHub(root / "A"), AdapterHub(root / "B")
    folder = write_random_adapter(root / "p1", seed=1)
    (folder / "adapterhub_examples.jsonl").write_text('{"text": "select all rows"}\n{"text": "count users"}\n')
    p1 = a.add(folder, "acme/p1", task="sql", tags=["x", "y"], description="one")
    p2 = a.add(write_random_adapter(root / "p2", seed=2), "acme/p2", task="chat")
    a.add_adapter(
        random_adapter(3),
        "acme/child",
        task="merged",
        tags=["m"],
        description="a merge",
        lineage=[
            LineageRecord(parent_name="acme/p1", operation="merge:lego", parent_digest=p1.digest,
                          params={"k": 4, "seed": 0}, weight=0.6),
            LineageRecord(parent_name="acme/p2", operation="merge:lego", parent_digest=p2.digest,
                          params={"k": 4, "seed": 0}, weight=0.4),
        ],
    )
    a.add_metrics("acme/child", {"accuracy": 0.75, "loss": 1.25}, task="sql", split="test")
    pushed = {n: a.push(n, n, endpoint=live.url, token=live.token) for n in NAMES}
    pulled = {n: b.pull(n, endpoint=live.url) for n in NAMES}
    yield a, b, pushed, pulled
    a.close()
    b.close()


def test_pull_into_a_second_home_gives_identical_digests_and_lineage(live, homes):
    a, b, pushed, pulled = homes
    for name in NAMES:
        assert describe(b, name) == describe(a, name), name
        assert describe(live.hub, name)["lineage"] == describe(a, name)["lineage"]
        assert pulled[name].source_repo == name
        assert pulled[name].source_revision == pushed[name]["revision"] == live.hub.get(name).revision
    assert b.lineage("acme/child") == a.lineage("acme/child")
    assert b.verify() == {"missing": [], "corrupt": []}


def test_push_and_pull_carry_the_example_inputs(live, homes):
    from adapterhub.app.examples import examples_of

    a, b, _, _ = homes
    assert examples_of(a, "acme/p1") == ["select all rows", "count users"]
    assert examples_of(live.hub, "acme/p1") == examples_of(b, "acme/p1") == examples_of(a, "acme/p1")
    assert examples_of(b, "acme/p2") == []  # none pushed, none pulled


def test_pushed_model_card(live, homes, tmp_path):
    from huggingface_hub import hf_hub_download

    card = Path(hf_hub_download("acme/child", "README.md", endpoint=live.url, cache_dir=str(tmp_path))).read_text()
    assert card.startswith("---\nlibrary_name: peft\nbase_model:\n- acme/p1\n- acme/p2\nbase_model_relation: merge\n")
    assert "| acme/p1 | merge:lego | 0.6 |" in card and "| sql | test | accuracy | 0.7500 |" in card
    info = parse_card(card)
    assert info.digest == homes[0].get("acme/child").digest and info.task == "merged"
    parent = Path(hf_hub_download("acme/p1", "README.md", endpoint=live.url, cache_dir=str(tmp_path))).read_text()
    assert "base_model: tiny-bert\nbase_model_relation: adapter\n" in parent


def test_pulling_the_same_commit_again_changes_nothing(live, homes):
    _, b, _, pulled = homes
    again = b.pull("acme/p2", endpoint=live.url)
    assert again == pulled["acme/p2"]
    assert len(b.catalog.revisions("acme/p2")) == 1


def test_a_new_commit_becomes_a_new_revision(live, homes, tmp_path):
    a, b, pushed, _ = homes
    a.remove("acme/p1")
    a.add(write_random_adapter(tmp_path / "p1v2", seed=9), "acme/p1", task="sql", tags=["x", "y", "z"])
    second = a.push("acme/p1", "acme/p1", endpoint=live.url, token=live.token)["revision"]
    assert second != pushed["acme/p1"]["revision"]
    record = b.pull("acme/p1", endpoint=live.url)
    revisions = b.catalog.revisions("acme/p1")
    assert len(revisions) == 2 and revisions[0].revision == record.revision
    assert record.digest == random_adapter(9).digest and record.source_revision == second
    assert record.tags == ("x", "y", "z")
    # The old commit is still there, and pulls under another name.
    old = b.pull("acme/p1", revision=pushed["acme/p1"]["revision"], name="acme/p1-old", endpoint=live.url)
    assert old.digest == pushed["acme/p1"]["digest"]


def test_a_stale_card_does_not_lend_its_lineage_to_other_weights(live, homes, tmp_path):
    a, b, _, _ = homes
    a.push("acme/child", "acme/stale", endpoint=live.url, token=live.token)
    other = write_random_adapter(tmp_path / "other", seed=77)
    from huggingface_hub import HfApi

    HfApi(endpoint=live.url, token=live.token).upload_file(
        path_or_fileobj=str(other / "adapter_model.safetensors"), path_in_repo="adapter_model.safetensors",
        repo_id="acme/stale",
    )  # the README (with the child's digest and lineage) stays as it was
    record = b.pull("acme/stale", endpoint=live.url)
    assert record.digest == random_adapter(77).digest
    assert b.catalog.lineage("acme/stale") == [] and record.tags == () and record.task is None


def test_pull_refuses_to_replace_an_entry_from_elsewhere(live, homes, tmp_path):
    _, b, _, _ = homes
    b.add(write_random_adapter(tmp_path / "own", seed=30), "acme/own")
    with pytest.raises(AdapterExistsError):
        b.pull("acme/p2", name="acme/own", endpoint=live.url)


def test_hf_endpoint_and_hf_token_are_read_at_call_time(live, homes, monkeypatch):
    a, _, _, _ = homes
    monkeypatch.setenv("HF_ENDPOINT", live.url)
    monkeypatch.setenv("HF_TOKEN", live.token)
    result = a.push("acme/p2", "acme/from-env")
    assert result["url"] == f"{live.url}/acme/from-env"
    assert live.hub.get("acme/from-env").digest == a.get("acme/p2").digest


def test_errors_say_what_to_do(live, homes, monkeypatch, tmp_path):
    a, b, _, _ = homes
    with pytest.raises(HubError, match="not found"):
        b.pull("acme/does-not-exist", endpoint=live.url)
    with pytest.raises(AuthError, match="HF_TOKEN"):
        a.push("acme/p2", "acme/no-token", endpoint=live.url, token=None)
    with pytest.raises(AuthError, match="refused"):
        a.push("acme/p2", "acme/bad-token", endpoint=live.url, token="ah_wrong")
    assert not live.hub.catalog.exists("acme/no-token") and not live.hub.catalog.exists("acme/bad-token")
    with pytest.raises(HubError, match="cannot reach"):
        b.pull("acme/p2", name="acme/x", endpoint="http://127.0.0.1:9")


def test_private_repos_need_a_token(live, homes):
    a, b, _, _ = homes
    a.push("acme/p2", "acme/secret", endpoint=live.url, token=live.token, private=True)
    with pytest.raises(HubError, match="private"):  # answered as a missing repo (404), so names cannot be probed
        b.pull("acme/secret", endpoint=live.url)
    assert b.pull("acme/secret", endpoint=live.url, token=live.read_token).digest == a.get("acme/p2").digest


def test_offline_pull_uses_the_cache_and_says_so_otherwise(live, homes, monkeypatch):
    a, b, pushed, _ = homes
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    record = b.pull("acme/p2", name="acme/p2-offline", endpoint=live.url)  # cached by the module's pull
    assert record.digest == a.get("acme/p2").digest and record.source_revision == pushed["acme/p2"]["revision"]
    with pytest.raises(HubError, match="offline"):
        b.pull("acme/never-downloaded", endpoint=live.url)
    with pytest.raises(HubError, match="offline"):
        a.push("acme/p2", "acme/p2", endpoint=live.url, token=live.token)


def _http_error(cls: type, status: int) -> Exception:
    request = httpx2.Request("GET", "https://hub.example/api/models/org/repo")
    return cls("boom", response=httpx2.Response(status, request=request))


@pytest.mark.parametrize(
    ("error", "expected", "needle"),
    [
        (_http_error(hf_errors.GatedRepoError, 403), AuthError, "gated"),
        (_http_error(hf_errors.RepositoryNotFoundError, 404), HubError, "not found"),
        (_http_error(hf_errors.RevisionNotFoundError, 404), HubError, "no such revision"),
        (_http_error(hf_errors.HfHubHTTPError, 401), AuthError, "HF_TOKEN"),
        (_http_error(hf_errors.HfHubHTTPError, 403), AuthError, "HF_TOKEN"),
        (_http_error(hf_errors.HfHubHTTPError, 500), HubError, "HTTP 500"),
        (hf_errors.OfflineModeIsEnabled("off"), HubError, "offline"),
        (hf_errors.LocalEntryNotFoundError("not cached"), HubError, "offline"),
    ],
)
def test_every_hub_error_is_translated(error, expected, needle):
    translated = HubClient(endpoint="https://hub.example")._translate(error, "org/repo", None)
    assert type(translated) is expected and needle in str(translated)


def test_cli_push_and_pull(live, homes, tmp_path, monkeypatch):
    from adapterhub.cli.main import app

    runner = CliRunner()
    monkeypatch.setenv("ADAPTERHUB_HOME", str(tmp_path / "cli-home"))
    added = runner.invoke(app, ["add", str(write_random_adapter(tmp_path / "c", seed=40)), "--name", "cli/one"])
    assert added.exit_code == 0, added.output
    pushed = runner.invoke(
        app, ["push", "cli/one", "cli/one", "--endpoint", live.url, "--token", live.token, "--json"]
    )
    assert pushed.exit_code == 0, pushed.output
    sha = json.loads(pushed.stdout)["revision"]
    pulled = runner.invoke(app, ["pull", "cli/one", "--name", "cli/again", "--endpoint", live.url, "--json"])
    assert pulled.exit_code == 0, pulled.output
    assert json.loads(pulled.stdout)["source_revision"] == sha
    missing = runner.invoke(app, ["pull", "cli/missing", "--endpoint", live.url])
    assert missing.exit_code == 1 and missing.stdout == ""
    assert missing.stderr.startswith("error: repository 'cli/missing' on ") and "not found" in missing.stderr


# -- pull speed (issue 9 item 14): one read of the download, stored once ------------------------------

WEIGHTS = "adapter_model.safetensors"


def _cached_weights(cache: Path, repo_id: str) -> Path:
    """The weights blob of ``repo_id`` in a Hugging Face cache (the file snapshots link to)."""
    (path,) = (cache / f"models--{repo_id.replace('/', '--')}" / "snapshots").glob(f"*/{WEIGHTS}")
    return path.resolve()


def test_a_canonical_download_is_linked_into_the_store_not_copied(live, homes, tmp_path, monkeypatch):
    a, _, _, _ = homes  # pushed by adapterhub: the server serves canonical bytes
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    with AdapterHub(tmp_path / "home") as c:
        record = c.pull("acme/p2", endpoint=live.url)
        blob = c.blobs.path(record.digest)
        cached = _cached_weights(tmp_path / "cache", "acme/p2")
        assert record.digest == a.get("acme/p2").digest
        assert blob.stat().st_ino == cached.stat().st_ino  # one copy on disk, two names
        assert stat.S_IMODE(blob.stat().st_mode) == 0o600
        assert c.verify() == {"missing": [], "corrupt": []}
        assert not list(c.blobs.base.glob(".tmp-*"))


def test_a_peft_written_file_is_stored_as_its_canonical_bytes(live, tmp_path, monkeypatch):
    """safetensors.save_file orders each header entry differently: the blob is canonical header +
    the same data, its digest the one `add` gives, and the download keeps its own bytes."""
    from huggingface_hub import HfApi
    from safetensors.torch import save_file

    adapter = random_adapter(51)
    folder = tmp_path / "peft"
    adapter.save(folder)
    tensors = {k: adapter._source.get(k) for k in adapter._source.keys()}
    save_file(tensors, str(folder / WEIGHTS), metadata={"format": "pt", "note": "peft"})
    assert LoraAdapter.load(folder).canonical_layout().is_canonical is False
    api = HfApi(endpoint=live.url, token=live.token)
    api.create_repo("acme/peft-written", exist_ok=True)
    api.upload_folder(repo_id="acme/peft-written", folder_path=str(folder))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    with AdapterHub(tmp_path / "home") as c:
        record = c.pull("acme/peft-written", endpoint=live.url)
        cached = _cached_weights(tmp_path / "cache", "acme/peft-written")
        assert record.digest == adapter.digest and record.size == adapter.digest_and_size[1]
        assert cached.read_bytes() == (folder / WEIGHTS).read_bytes()  # the HF cache: bytes as served
        assert c.blobs.path(record.digest).stat().st_ino != cached.stat().st_ino
        assert c.verify() == {"missing": [], "corrupt": []}
        assert not list(c.blobs.base.glob(".tmp-*"))


def test_the_lfs_sha256_is_still_checked_and_a_mismatch_stores_nothing(live, homes, tmp_path, monkeypatch):
    from adapterhub.store.hub_client import RemoteRevision

    real = HubClient.resolve

    def lying(self, repo_id, revision=None):
        remote = real(self, repo_id, revision)
        return RemoteRevision(remote.repo_id, remote.sha, {WEIGHTS: "0" * 64}, remote.files)

    monkeypatch.setattr(HubClient, "resolve", lying)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    with AdapterHub(tmp_path / "home") as c:
        with pytest.raises(InvalidAdapterError, match="does not hash to the sha256 the hub lists"):
            c.pull("acme/p1", endpoint=live.url)
        assert not c.catalog.exists("acme/p1")
        assert list(c.blobs.digests()) == [] and not list(c.blobs.base.glob(".tmp-*"))


def test_a_pull_across_devices_copies_instead_of_linking(live, homes, tmp_path, monkeypatch):
    def no_links(*args, **kwargs):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_links)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    with AdapterHub(tmp_path / "home") as c:
        record = c.pull("acme/p2", endpoint=live.url)
        cached = _cached_weights(tmp_path / "cache", "acme/p2")
        assert c.blobs.path(record.digest).stat().st_ino != cached.stat().st_ino
        assert c.blobs.path(record.digest).read_bytes() == cached.read_bytes()
        assert c.verify() == {"missing": [], "corrupt": []}


def _with_nan(adapter: LoraAdapter, folder: Path, *, canonical: bool) -> Path:
    from safetensors.torch import save_file

    tensors = {k: adapter._source.get(k).clone() for k in adapter._source.keys()}
    last = sorted(tensors)[-1]
    tensors[last].view(-1)[0] = float("nan")
    bad = LoraAdapter(adapter.config, DictSource(tensors))
    bad.save(folder)
    if not canonical:
        save_file(tensors, str(folder / WEIGHTS), metadata={"format": "pt"})
    return folder


@pytest.mark.parametrize("canonical", [True, False], ids=["canonical", "peft-written"])
def test_received_weights_refuse_nan_and_store_nothing(tmp_path, canonical):
    folder = _with_nan(random_adapter(52), tmp_path / "bad", canonical=canonical)
    with AdapterHub(tmp_path / "home") as c:
        adapter = LoraAdapter.load(folder, validate=False)
        with pytest.raises(InvalidAdapterError, match="NaN or Inf"):
            with received_weights(c, adapter, folder / WEIGHTS, expected_sha256=None, what="x"):
                pass
        assert list(c.blobs.digests()) == [] and not list(c.blobs.base.glob(".tmp-*"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("canonical", [True, False], ids=["canonical", "peft-written"])
def test_received_weights_store_the_canonical_digest(tmp_path, dtype, canonical):
    from safetensors.torch import save_file

    adapter = random_adapter(53).astype(dtype)
    folder = adapter.save(tmp_path / "a")
    if not canonical:
        save_file({k: adapter._source.get(k) for k in adapter._source.keys()}, str(folder / WEIGHTS))
    file_sha256 = hashlib.sha256((folder / WEIGHTS).read_bytes()).hexdigest()
    with AdapterHub(tmp_path / "home") as c:
        received = LoraAdapter.load(folder, validate=False)
        with received_weights(c, received, folder / WEIGHTS, expected_sha256=file_sha256, what="x") as stored:
            pass
        assert (stored.digest, stored.size) == adapter.digest_and_size == received.digest_and_size
        assert stored.file_sha256 == file_sha256
        assert c.blobs.verify(stored.digest)


def test_a_file_laid_out_otherwise_takes_the_general_path(tmp_path):
    """Data not in sorted key order (hand-written file): no fast layout, same canonical digest."""
    import json
    import struct

    adapter = random_adapter(54)
    folder = adapter.save(tmp_path / "a")
    keys = sorted(adapter._source.keys(), reverse=True)
    header, data, offset = {}, b"", 0
    for k in keys:
        raw = adapter._source.get(k).contiguous().numpy().tobytes()
        header[k] = {"dtype": "F32", "shape": list(adapter._source.get(k).shape), "data_offsets": [offset, offset + len(raw)]}
        data += raw
        offset += len(raw)
    encoded = json.dumps(header).encode()
    (folder / WEIGHTS).write_bytes(struct.pack("<Q", len(encoded)) + encoded + data)
    received = LoraAdapter.load(folder, validate=False)
    assert received.canonical_layout() is None
    with AdapterHub(tmp_path / "home") as c:
        with received_weights(c, received, folder / WEIGHTS, expected_sha256=None, what="x") as stored:
            pass
        assert stored.digest == adapter.digest and c.blobs.verify(stored.digest)


def test_the_canonical_copy_falls_back_to_python_where_the_kernel_cannot_copy(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    def cannot(*args, **kwargs):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "copy_file_range", cannot)
    adapter = random_adapter(55)
    folder = adapter.save(tmp_path / "a")
    save_file({k: adapter._source.get(k) for k in adapter._source.keys()}, str(folder / WEIGHTS))
    file_sha256 = hashlib.sha256((folder / WEIGHTS).read_bytes()).hexdigest()
    with AdapterHub(tmp_path / "home") as c:
        received = LoraAdapter.load(folder, validate=False)
        with received_weights(c, received, folder / WEIGHTS, expected_sha256=file_sha256, what="x") as stored:
            pass
        assert stored.digest == adapter.digest and c.blobs.verify(stored.digest)
        assert not list(c.blobs.base.glob(".tmp-*"))
