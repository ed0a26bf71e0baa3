"""A hub whose blobs live in a bucket (``ADAPTERHUB_BLOB_URL``): push, 302 to presigned URLs, PEFT, verify, gc."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch
from huggingface_hub import HfApi, constants, hf_hub_download

from adapterhub.app import AdapterHub
from tests.helpers import Live, live_hub, live_server, make_peft_adapter, write_random_adapter
from tests.s3helpers import bucket_keys, bucket_of, s3_client
from tests.server.test_peft_e2e import logits_from_hub


@pytest.fixture
def bucket_live(online: None, s3_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Live]:
    monkeypatch.setenv("ADAPTERHUB_BLOB_URL", s3_url)
    with live_hub(tmp_path / "server-home") as live:
        yield live


@pytest.mark.slow
def test_peft_loads_through_a_302_to_the_bucket(
    bucket_live: Live, s3_endpoint: str, s3_url: str, tmp_path: Path, input_ids: torch.Tensor
) -> None:
    live = bucket_live
    with pytest.MonkeyPatch.context() as mp:  # PEFT's save looks up the base model on the hub: stay offline
        mp.setattr(constants, "HF_HUB_OFFLINE", True)
        peft_model, folder = make_peft_adapter(tmp_path / "peft", seed=3)
    with torch.no_grad():
        reference = peft_model(input_ids=input_ids).last_hidden_state
    api = HfApi(endpoint=live.url, token=live.token)
    api.create_repo("acme/in-bucket")
    api.upload_folder(repo_id="acme/in-bucket", folder_path=str(folder))

    uploaded = (folder / "adapter_model.safetensors").read_bytes()
    digest = hashlib.sha256(uploaded).hexdigest()  # PEFT's own bytes are kept and served as uploaded
    assert f"blobs/sha256/{digest[:2]}/{digest[2:]}" in bucket_keys(s3_endpoint, s3_url)
    assert not (live.home / "blobs").exists()  # nothing on the server's disk but its cache

    url = f"{live.url}/acme/in-bucket/resolve/main/adapter_model.safetensors"
    for method in ("HEAD", "GET"):
        answer = httpx.request(method, url, headers={"Authorization": f"Bearer {live.token}"})
        assert answer.status_code == 302, answer.text
        assert answer.headers["location"].startswith(s3_endpoint)
        assert answer.headers["x-linked-size"] == str(len(uploaded))
        assert answer.headers["x-linked-etag"] == f'"{digest}"' and answer.headers["x-repo-commit"]
    fetched = hf_hub_download("acme/in-bucket", "adapter_model.safetensors", endpoint=live.url, token=live.token,
                              cache_dir=tmp_path / "hf")
    assert Path(fetched).read_bytes() == uploaded

    small = httpx.get(f"{live.url}/acme/in-bucket/resolve/main/adapter_config.json")
    assert small.status_code == 200 and b"lora" in small.content.lower()  # small files are answered directly

    from_hub = logits_from_hub(live.url, "acme/in-bucket", tmp_path)
    torch.testing.assert_close(from_hub, reference, rtol=0, atol=1e-6)


def test_verify_and_gc_work_against_the_bucket(
    s3_url: str, s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ADAPTERHUB_BLOB_URL", s3_url)
    hub = AdapterHub(tmp_path / "home")
    try:
        keep = hub.add(write_random_adapter(tmp_path / "a", seed=1), "acme/keep")
        drop = hub.add(write_random_adapter(tmp_path / "b", seed=2), "acme/drop")
        assert len(bucket_keys(s3_endpoint, s3_url)) == 2
        assert hub.verify() == {"missing": [], "corrupt": []}

        hub.catalog.remove("acme/drop")  # the row goes; its blob stays until gc
        hub.gc(grace_seconds=0)
        keys = bucket_keys(s3_endpoint, s3_url)
        assert keys == [f"blobs/sha256/{keep.digest[:2]}/{keep.digest[2:]}"]
        assert drop.digest not in set(hub.blobs.digests())

        s3_client(s3_endpoint).put_object(Bucket=bucket_of(s3_url), Key=keys[0], Body=b"not the weights")
        assert hub.verify() == {"missing": [], "corrupt": [keep.digest]}  # rehashed from the bucket's bytes
        hub.blobs.delete(keep.digest)
        assert hub.verify() == {"missing": [keep.digest], "corrupt": []}
    finally:
        hub.close()


def test_a_second_machine_reads_what_the_first_stored(
    s3_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ADAPTERHUB_BLOB_URL", s3_url)
    first = AdapterHub(tmp_path / "one")
    record = first.add(write_random_adapter(tmp_path / "a", seed=5), "acme/shared")
    second = AdapterHub(tmp_path / "two", database_url=first.settings.database_url)  # one catalog, one bucket
    try:
        exported = second.export("acme/shared", tmp_path / "out")
        original = first.blobs.local_path(record.digest).read_bytes()
        assert (exported / "adapter_model.safetensors").read_bytes() == original
        assert second.blobs.path(record.digest).is_file()  # cached on the second machine now
    finally:
        first.close()
        second.close()


def test_an_upload_may_land_on_any_replica(
    online: None, s3_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Behind a load balancer: the LFS batch on replica A, the bytes PUT to replica B, the commit on A."""
    monkeypatch.setenv("ADAPTERHUB_BLOB_URL", s3_url)
    monkeypatch.setenv("ADAPTERHUB_DATABASE_URL", f"sqlite:///{tmp_path / 'shared.db'}")
    monkeypatch.setenv("ADAPTERHUB_URL_SECRET", "one secret for the whole team deployment")
    folder = write_random_adapter(tmp_path / "a", seed=9)
    data = (folder / "adapter_model.safetensors").read_bytes()
    oid = hashlib.sha256(data).hexdigest()
    from adapterhub.server import create_app

    hub_b = AdapterHub(tmp_path / "replica-b")  # the same catalog and bucket, its own home and cache
    with live_hub(tmp_path / "replica-a") as a, live_server(create_app(hub_b)) as b_url:
        HfApi(endpoint=a.url, token=a.token).create_repo("acme/balanced")
        body = {"operation": "upload", "transfers": ["basic"], "objects": [{"oid": oid, "size": len(data)}]}
        batch = httpx.post(f"{a.url}/acme/balanced.git/info/lfs/objects/batch", json=body,
                           headers={"Authorization": f"Bearer {a.token}"})
        href = batch.json()["objects"][0]["actions"]["upload"]["href"]
        assert httpx.put(href.replace(a.url, b_url), content=data).status_code == 200  # signed by A, taken by B
        assert a.hub.blobs.has(oid)  # in the shared bucket, so A sees it too
        again = httpx.post(f"{a.url}/acme/balanced.git/info/lfs/objects/batch", json=body,
                           headers={"Authorization": f"Bearer {a.token}"})
        assert "actions" not in again.json()["objects"][0]  # nothing left to send
        info = HfApi(endpoint=a.url, token=a.token).upload_folder(repo_id="acme/balanced", folder_path=str(folder))
        fetched = hf_hub_download("acme/balanced", "adapter_model.safetensors", revision=info.oid,
                                  endpoint=b_url, token=a.token, cache_dir=tmp_path / "hf")
        assert Path(fetched).read_bytes() == data
    hub_b.close()
