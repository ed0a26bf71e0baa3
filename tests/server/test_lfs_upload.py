"""LFS uploads (issue 9, item 12) with the real ``huggingface_hub`` client against a live server.

The server answers preupload with ``uploadMode: "lfs"`` for weights and large files; a client
without ``hf_xet`` then calls the LFS batch API, PUTs the bytes to the signed URL it got, verifies,
and commits an ``lfsFile`` line. ``huggingface_hub`` 2.x takes its Xet path instead whenever
``hf_xet`` is installed (``test_xet_upload.py``), so these clients run with Xet off
(``HF_HUB_DISABLE_XET``), as one without ``hf_xet`` would.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch
from huggingface_hub import HfApi, constants, hf_hub_download, snapshot_download
from safetensors.torch import load_file

from tests.helpers import CallLog, free_port, live_server, store_state, write_random_adapter

REPO = "acme/big"
THRESHOLD = 1024  # small, so the test adapter's weights are over it (every *.safetensors is LFS anyway)
MAX_UPLOAD = 512 << 20


@pytest.fixture(scope="module")
def server(online, tmp_path_factory) -> Iterator[tuple[str, object, Path, str, CallLog]]:
    """A live hub with LFS on (threshold 1 KiB, 512 MiB uploads) and a Xet-less client."""
    from adapterhub.app import AdapterHub
    from adapterhub.server import create_app

    home = tmp_path_factory.mktemp("lfs-home")
    hub = AdapterHub(home)
    token = hub.create_token(name="writer", admin=True)["token"]
    app = create_app(hub, max_upload_bytes=MAX_UPLOAD)
    app.state.lfs_threshold = THRESHOLD
    log = CallLog(app)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(constants, "HF_HUB_DISABLE_XET", True)
        try:
            with live_server(log) as url:
                HfApi(endpoint=url, token=token).create_repo(REPO, exist_ok=True)
                yield url, hub, home, token, log
        finally:
            hub.close()


def _lfs_calls(calls: list[tuple[str, str, int]]) -> list[tuple[str, str]]:
    return [(m, p) for m, p, _ in calls if "/info/lfs/" in p or p.startswith("/api/lfs/")]


def test_upload_folder_sends_the_weights_through_lfs(server, tmp_path):
    url, hub, _, token, log = server
    folder = write_random_adapter(tmp_path / "a", seed=3)
    (folder / "README.md").write_text("---\nlibrary_name: peft\n---\n# card\n")
    weights = folder / "adapter_model.safetensors"
    assert weights.stat().st_size > THRESHOLD
    log.take()
    info = HfApi(endpoint=url, token=token).upload_folder(repo_id=REPO, folder_path=str(folder))
    calls = log.take()
    lfs = _lfs_calls(calls)
    assert [m for m, _ in lfs] == ["POST", "PUT", "POST"], calls  # batch, upload, verify
    commit = [n for m, p, n in calls if p.endswith("/commit/main")]
    assert len(commit) == 1 and commit[0] < weights.stat().st_size  # no base64 weights in the commit
    path = Path(snapshot_download(REPO, endpoint=url, cache_dir=tmp_path / "cache", revision=info.oid))
    got, sent = load_file(path / "adapter_model.safetensors"), load_file(weights)
    assert got.keys() == sent.keys() and all(torch.equal(got[k], sent[k]) for k in sent)
    assert (path / "README.md").read_text() == (folder / "README.md").read_text()

    # The same weights again: the batch answers "already here" (no upload action), the commit still works.
    (folder / "README.md").write_text("---\nlibrary_name: peft\n---\n# card v2\n")
    HfApi(endpoint=url, token=token).upload_folder(repo_id=REPO, folder_path=str(folder))
    assert not [c for c in _lfs_calls(log.take()) if c[0] == "PUT"]


def _batch(url: str, token: str | None, oid: str, size: int) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    body = {"operation": "upload", "transfers": ["basic"], "objects": [{"oid": oid, "size": size}], "hash_algo": "sha256"}
    return httpx.post(f"{url}/{REPO}.git/info/lfs/objects/batch", json=body, headers=headers, timeout=30)


def test_bytes_that_do_not_match_the_oid_are_refused_and_nothing_is_kept(server):
    url, _, home, token, _ = server
    data = os.urandom(100_000)
    oid = hashlib.sha256(data).hexdigest()
    answer = _batch(url, token, oid, len(data))
    assert answer.status_code == 200, answer.text
    href = answer.json()["objects"][0]["actions"]["upload"]["href"]
    before = store_state(home), sorted(p.name for p in (home / "uploads" / "lfs").iterdir())
    wrong = httpx.put(href, content=os.urandom(len(data)), timeout=30)  # same size, other bytes
    assert wrong.status_code == 422 and "do not match" in wrong.json()["error"]
    short = httpx.put(href, content=data[:-1], timeout=30)
    assert short.status_code == 422 and "bytes" in short.json()["error"]
    longer = httpx.put(href, content=data + b"x", timeout=30)
    assert longer.status_code == 413
    assert (store_state(home), sorted(p.name for p in (home / "uploads" / "lfs").iterdir())) == before
    # an lfsFile naming an object never received is refused too, and changes nothing
    line = {"key": "lfsFile", "value": {"path": "x.safetensors", "algo": "sha256", "oid": oid, "size": len(data)}}
    body = json.dumps({"key": "header", "value": {"summary": "x"}}) + "\n" + json.dumps(line) + "\n"
    commit = httpx.post(f"{url}/api/models/{REPO}/commit/main", content=body,
                        headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert commit.status_code == 422 and "was not uploaded" in commit.json()["error"]
    assert store_state(home) == before[0]


def test_lfs_upload_without_write_access_is_refused(server):
    url, hub, home, token, _ = server
    data = b"secret weights" * 100
    oid = hashlib.sha256(data).hexdigest()
    assert _batch(url, None, oid, len(data)).status_code == 401
    reader = hub.create_token(name="reader", write=False, admin=True)["token"]
    assert _batch(url, reader, oid, len(data)).status_code == 403
    other = hub.create_token(name="other-ns", owner="other")["token"]  # writes only into "other"
    assert _batch(url, other, oid, len(data)).status_code == 403
    # A signed URL for one object (or repo) does not upload another, and an unsigned PUT is refused.
    href = _batch(url, token, oid, len(data)).json()["objects"][0]["actions"]["upload"]["href"]
    base, _, query = href.partition("?")
    evil = os.urandom(len(data))
    evil_oid = hashlib.sha256(evil).hexdigest()
    for target in (f"{url}/api/lfs/upload/{REPO}/{evil_oid}?{query}",
                   f"{url}/api/lfs/upload/acme/other/{oid}?{query}",
                   f"{url}/api/lfs/upload/{REPO}/{oid}",
                   base + "?" + query.replace("sig=", "sig=0")):
        r = httpx.put(target, content=evil if evil_oid in target else data, timeout=30)
        assert r.status_code == 403, (target, r.text)
    assert not (home / "uploads" / "lfs" / evil_oid).exists() and not (home / "uploads" / "lfs" / oid).exists()
    verify = httpx.post(f"{url}/api/lfs/verify/{REPO}", json={"oid": oid, "size": len(data)}, timeout=30)
    assert verify.status_code == 401


def _rss_anon_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    raise RuntimeError("no RssAnon")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="RssAnon is read from /proc")
def test_a_200_mb_file_uploads_through_lfs_without_the_file_in_memory(server, tmp_path):
    """The server runs in this process (a thread), so RssAnon covers client and server together:
    neither may hold the file. Peak growth is sampled every 20 ms during the upload."""
    url, _, _, token, log = server
    folder = write_random_adapter(tmp_path / "a", seed=4)
    big = folder / "extra" / "big.dat"
    big.parent.mkdir()
    size = 200 << 20
    digest = hashlib.sha256()
    with open(big, "wb") as f:
        for i in range(size >> 22):
            block = hashlib.sha256(str(i).encode()).digest() * (1 << 17)  # 4 MiB, no RAM left behind
            f.write(block)
            digest.update(block)
    base = _rss_anon_kib()
    peak = [base]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_anon_kib())
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    log.take()
    started = time.monotonic()
    try:
        info = HfApi(endpoint=url, token=token).upload_folder(repo_id=REPO, folder_path=str(folder))
    finally:
        stop.set()
        sampler.join()
    seconds = time.monotonic() - started
    calls = log.take()
    assert ("PUT", f"/api/lfs/upload/{REPO}/{digest.hexdigest()}") in [(m, p.split("?")[0]) for m, p, _ in calls]
    growth_mib = (peak[0] - base) / 1024
    print(f"200 MiB LFS upload: {seconds:.1f} s, peak RssAnon growth {growth_mib:.0f} MiB")
    assert growth_mib < 100, growth_mib
    got = Path(hf_hub_download(REPO, "extra/big.dat", revision=info.oid, endpoint=url, cache_dir=tmp_path / "c"))
    h = hashlib.sha256()
    with open(got, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    assert h.hexdigest() == digest.hexdigest()


def test_lfs_is_on_by_default_and_off_without_a_threshold(live):
    """Weights and files over 10 MiB go before the commit by default (as on the Hugging Face hub);
    ``lfs_threshold=None`` (``serve --lfs-threshold-mb 0``) sends every file inline."""
    from fastapi.testclient import TestClient

    from adapterhub.server import create_app

    files = [{"path": "adapter_model.safetensors", "sample": "", "size": 200_000},
             {"path": "notes.txt", "sample": "", "size": 10 << 20},
             {"path": "README.md", "sample": "", "size": 100}]
    HfApi(endpoint=live.url, token=live.token).create_repo("acme/off", exist_ok=True)
    headers = {"Authorization": f"Bearer {live.token}"}
    with TestClient(create_app(live.hub, max_upload_bytes=MAX_UPLOAD)) as client:
        r = client.post("/api/models/acme/off/preupload/main", json={"files": files}, headers=headers)
        assert r.status_code == 200, r.text
        assert [f["uploadMode"] for f in r.json()["files"]] == ["lfs", "lfs", "regular"]
    with TestClient(create_app(live.hub, max_upload_bytes=MAX_UPLOAD, lfs_threshold=None)) as client:
        r = client.post("/api/models/acme/off/preupload/main", json={"files": files}, headers=headers)
        assert [f["uploadMode"] for f in r.json()["files"]] == ["regular", "regular", "regular"]


def test_preupload_answers_lfs_for_weights_and_large_files_only(server):
    url, _, _, token, _ = server
    files = [{"path": "adapter_model.safetensors", "sample": "", "size": 100},
             {"path": "notes.txt", "sample": "", "size": THRESHOLD},
             {"path": "README.md", "sample": "", "size": THRESHOLD - 1},
             {"path": "empty.safetensors", "sample": "", "size": 0}]
    r = httpx.post(f"{url}/api/models/{REPO}/preupload/main", json={"files": files},
                   headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert [f["uploadMode"] for f in r.json()["files"]] == ["lfs", "lfs", "regular", "regular"]


def _upload_object(url: str, token: str, data: bytes) -> str:
    oid = hashlib.sha256(data).hexdigest()
    href = _batch(url, token, oid, len(data)).json()["objects"][0]["actions"]["upload"]["href"]
    assert httpx.put(href, content=data, timeout=30).status_code == 200
    return oid


def test_a_pickle_uploaded_through_lfs_is_refused_at_commit(server):
    """The pickle check applies where the path is known: the commit naming the object."""
    url, _, home, token, _ = server
    pickle = b"(lp0\nI1\naI2\na." + b" " * 2000  # a protocol-0 pickle (no 0x80 first byte)
    oid = _upload_object(url, token, pickle)
    before = store_state(home)
    for path, needle in (("notes.txt", "pickle"), ("adapter_model.safetensors", "safetensors header")):
        line = {"key": "lfsFile", "value": {"path": path, "algo": "sha256", "oid": oid, "size": len(pickle)}}
        body = json.dumps({"key": "header", "value": {"summary": "x"}}) + "\n" + json.dumps(line) + "\n"
        r = httpx.post(f"{url}/api/models/{REPO}/commit/main", content=body,
                       headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert r.status_code == 422 and needle in r.json()["error"], r.text
    assert store_state(home) == before


def test_gc_removes_uncommitted_lfs_objects(server):
    url, hub, home, token, _ = server
    oid = _upload_object(url, token, os.urandom(5000))
    assert (home / "uploads" / "lfs" / oid).exists()
    assert hub.gc(grace_seconds=3600)["staging"] == []  # young: a commit may still name it
    freed = hub.gc(grace_seconds=0)
    assert str(home / "uploads" / "lfs" / oid) in freed["staging"]
    assert not (home / "uploads" / "lfs" / oid).exists()
