"""Xet uploads (issue 9, item 12) with the default ``huggingface_hub`` client against a live server.

``huggingface_hub`` 2.x with ``hf_xet`` (installed with it by default) uploads every file that
preupload answers ``lfs`` for through Xet storage: a write token, xorbs, a shard, then a commit
with ``lfsFile`` lines. Nothing is switched on the client here: these are its default settings.
The client computes every xorb hash itself, so a xorb accepted here is also a check of this
server's hash code against the reference implementation (``hf_xet``'s Rust).
"""

from __future__ import annotations

import filecmp
import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from huggingface_hub import HfApi, constants, hf_hub_download, snapshot_download
from peft import PeftModel

from tests.helpers import CallLog, free_port, live_server, random_adapter, tiny_bert, write_random_adapter

REPO = "acme/xet"
MAX_UPLOAD = 512 << 20


@pytest.fixture(scope="module")
def server(online, tmp_path_factory) -> Iterator[tuple[str, object, Path, str, CallLog]]:
    """A live hub with its default settings (weights and files over 10 MiB go through LFS/Xet)."""
    from adapterhub.app import AdapterHub
    from adapterhub.server import create_app

    assert not constants.HF_HUB_DISABLE_XET  # the client's default: Xet on
    home = tmp_path_factory.mktemp("xet-home")
    hub = AdapterHub(home)
    token = hub.create_token(name="writer", admin=True)["token"]
    log = CallLog(create_app(hub, max_upload_bytes=MAX_UPLOAD))
    try:
        with live_server(log) as url:
            HfApi(endpoint=url, token=token).create_repo(REPO, exist_ok=True)
            yield url, hub, home, token, log
    finally:
        hub.close()


def test_upload_folder_with_the_default_client_goes_through_xet_byte_exact(server, tmp_path):
    url, hub, home, token, log = server
    folder = write_random_adapter(tmp_path / "a", seed=5)
    (folder / "README.md").write_text("---\nlibrary_name: peft\n---\n# card\n")
    weights = folder / "adapter_model.safetensors"
    log.take()
    info = HfApi(endpoint=url, token=token).upload_folder(repo_id=REPO, folder_path=str(folder))
    calls = log.take()
    paths = [p for _, p, _ in calls]
    assert f"/api/models/{REPO}/xet-write-token/main" in paths
    assert any(re.fullmatch(r"/xet/[0-9a-f]{16}/v1/xorbs/default/[0-9a-f]{64}", p) for p in paths)
    assert any(re.fullmatch(r"/xet/[0-9a-f]{16}/v1/shards", p) for p in paths)
    assert not [p for p in paths if "/info/lfs/" in p or p.startswith("/api/lfs/")]
    commit = [n for _, p, n in calls if p.endswith("/commit/main")]
    assert len(commit) == 1 and commit[0] < weights.stat().st_size  # the weights are not in the commit

    got = Path(snapshot_download(REPO, endpoint=url, cache_dir=tmp_path / "cache", revision=info.oid))
    for name in ("adapter_model.safetensors", "adapter_config.json", "README.md"):
        assert filecmp.cmp(got / name, folder / name, shallow=False), name
    PeftModel.from_pretrained(tiny_bert(0), got)  # PEFT loads what was pushed
    assert hub.catalog.get(REPO).digest  # catalogued, as after an inline commit

    # Unchanged files again: the client finds nothing to upload, and no commit is made.
    HfApi(endpoint=url, token=token).upload_folder(repo_id=REPO, folder_path=str(folder))
    assert not [p for _, p, _ in log.take() if "/v1/xorbs/" in p]
    assert [c.commit_id for c in HfApi(endpoint=url, token=token).list_repo_commits(REPO)][0] == info.oid


@pytest.mark.slow
def test_a_200_mb_file_uploads_through_xet(server, tmp_path):
    """Float32 noise (what weights look like: barely compressible, no repeated chunks)."""
    url, _, home, token, log = server
    folder = write_random_adapter(tmp_path / "a", seed=6)
    big = folder / "extra" / "big.dat"
    big.parent.mkdir()
    rng = np.random.default_rng(0)
    digest = hashlib.sha256()
    with open(big, "wb") as f:
        for _ in range(50):
            block = rng.standard_normal(1 << 20, dtype=np.float32).tobytes()  # 4 MiB
            f.write(block)
            digest.update(block)
    log.take()
    info = HfApi(endpoint=url, token=token).upload_folder(repo_id=REPO, folder_path=str(folder))
    xorbs = [n for _, p, n in log.take() if "/v1/xorbs/" in p]
    assert sum(xorbs) > 150 << 20  # the bytes went as xorbs (byte-grouped LZ4 saves ~6% on float noise)
    got = Path(hf_hub_download(REPO, "extra/big.dat", revision=info.oid, endpoint=url, cache_dir=tmp_path / "c"))
    h = hashlib.sha256()
    with open(got, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    assert h.hexdigest() == digest.hexdigest()
    assert not [p for p in (home / "uploads" / "lfs").iterdir() if p.name != ".url-key"]  # moved to blobs


def _cas_url(url: str, token: str) -> str:
    answer = httpx.get(f"{url}/api/models/{REPO}/xet-write-token/main", headers={"Authorization": f"Bearer {token}"})
    return answer.json()["casUrl"]


def test_gc_removes_xorbs_and_the_client_uploads_them_again(server, tmp_path):
    """``hf_xet`` remembers the xorbs it sent per CAS URL; after gc it must not count on them."""
    url, hub, home, token, _ = server
    xet = home / "uploads" / "xet"
    folder = write_random_adapter(tmp_path / "g", seed=8)
    api = HfApi(endpoint=url, token=token)
    api.upload_folder(repo_id=REPO, folder_path=str(folder), path_in_repo="g")
    assert [p for p in xet.iterdir() if not p.name.startswith(".")]  # xorbs are kept for a while
    before = _cas_url(url, token)
    assert hub.gc(grace_seconds=3600)["staging"] == [] and _cas_url(url, token) == before
    freed = hub.gc(grace_seconds=0)["staging"]
    assert freed and not [p for p in xet.iterdir() if not p.name.startswith(".")]
    assert _cas_url(url, token) != before  # a new generation: the client's shard cache starts empty
    # the same bytes again, as a new file: the client sends every xorb again (a 422 before the fix)
    api.upload_folder(repo_id=REPO, folder_path=str(folder), path_in_repo="g2")
    got = Path(hf_hub_download(REPO, "g2/adapter_model.safetensors", endpoint=url, cache_dir=tmp_path / "c"))
    assert filecmp.cmp(got, folder / "adapter_model.safetensors", shallow=False)


def test_a_new_home_at_the_same_address_gets_every_xorb(online, tmp_path):
    """A server reset (new home, same host and port): the client's memory of the old one is no use."""
    from adapterhub.app import AdapterHub
    from adapterhub.server import create_app

    folder = write_random_adapter(tmp_path / "a", seed=9)
    port = free_port()
    for k in range(2):
        with AdapterHub(tmp_path / f"home{k}") as hub:
            token = hub.create_token(name="acme")["token"]
            with live_server(create_app(hub, max_upload_bytes=MAX_UPLOAD), port=port) as url:
                HfApi(endpoint=url, token=token).create_repo("acme/again")
                HfApi(endpoint=url, token=token).upload_folder(repo_id="acme/again", folder_path=str(folder))
                assert hub.catalog.get("acme/again").digest


def test_weights_are_torch_equal_after_the_round_trip(server, tmp_path):
    """The catalog holds the adapter whose tensors were sent (not only the served bytes)."""
    url, hub, _, token, _ = server
    folder = write_random_adapter(tmp_path / "b", seed=7)
    HfApi(endpoint=url, token=token).create_repo("acme/xet-b", exist_ok=True)
    HfApi(endpoint=url, token=token).upload_folder(repo_id="acme/xet-b", folder_path=str(folder))
    sent, stored = dict(random_adapter(7).modules()), dict(hub.load("acme/xet-b").modules())
    assert sent.keys() == stored.keys()
    for path, module in sent.items():
        assert torch.equal(stored[path].A, module.A) and torch.equal(stored[path].B, module.B), path
