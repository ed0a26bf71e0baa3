"""ObjectBlobStore against a real S3 API server: layout, verification, atomicity, ranges, gc, cache.

The bucket is inspected through boto3, a client independent of obstore, so the tests check what
is really in the bucket rather than what the store believes.
"""

from __future__ import annotations

import hashlib
import random
import shutil
import threading
from pathlib import Path

import httpx
import pytest

from adapterhub.errors import (
    BlobCorruptError,
    BlobNotFoundError,
    DigestMismatchError,
    InvalidParameterError,
    StorageUnavailableError,
)
from adapterhub.store import object_blobs
from adapterhub.store.object_blobs import ObjectBlobStore
from tests.s3helpers import bucket_keys, bucket_of, s3_client


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def store(s3_url: str, tmp_path: Path) -> ObjectBlobStore:
    return ObjectBlobStore(s3_url, tmp_path / "cache")


@pytest.fixture
def payload() -> bytes:
    return random.Random(0).randbytes(3 * (1 << 20) + 777)


def test_put_lands_in_the_bucket_under_the_local_layout(
    store: ObjectBlobStore, s3_endpoint: str, s3_url: str, payload: bytes
) -> None:
    digest, size = store.put_bytes(payload)
    assert (digest, size) == (sha(payload), len(payload))
    assert bucket_keys(s3_endpoint, s3_url) == [f"blobs/sha256/{digest[:2]}/{digest[2:]}"]
    assert store.has(digest) and store.size(digest) == len(payload) and store.verify(digest)
    assert list(store.digests()) == [digest]


def test_reads_come_from_the_bucket_into_a_verified_cache(store: ObjectBlobStore, payload: bytes) -> None:
    digest, _ = store.put_bytes(payload)
    shutil.rmtree(store.root)  # another machine: nothing cached
    assert not store.path(digest).exists()
    with store.open(digest) as f:
        assert f.read() == payload
    assert store.path(digest).read_bytes() == payload  # cached now
    assert store.read_range(digest, 10, 20) == payload[10:20]


def test_a_wrong_digest_stores_nothing(store: ObjectBlobStore, s3_endpoint: str, s3_url: str) -> None:
    with pytest.raises(DigestMismatchError):
        store.put_bytes(b"some bytes", "0" * 64)
    assert bucket_keys(s3_endpoint, s3_url) == []


def test_a_corrupt_object_is_never_used(store: ObjectBlobStore, s3_endpoint: str, s3_url: str, payload: bytes) -> None:
    digest, _ = store.put_bytes(payload)
    shutil.rmtree(store.root)
    s3_client(s3_endpoint).put_object(Bucket=bucket_of(s3_url), Key=f"blobs/{store.key(digest)}", Body=b"evil" + payload[4:])
    assert not store.verify(digest)
    with pytest.raises(BlobCorruptError, match="corrupt"):
        store.local_path(digest)
    assert not store.path(digest).exists()  # nothing half-checked in the cache


def test_missing_blob_and_missing_bucket_answer_clearly(store: ObjectBlobStore, tmp_path: Path) -> None:
    with pytest.raises(BlobNotFoundError):
        store.local_path("a" * 64)
    assert not store.has("a" * 64) and not store.verify("a" * 64)
    gone = ObjectBlobStore("s3://no-such-bucket-here/x", tmp_path / "c2")
    with pytest.raises(StorageUnavailableError, match="no such bucket"):
        gone.put_bytes(b"x")


def test_an_unreachable_server_is_a_503_error_not_a_crash(monkeypatch: pytest.MonkeyPatch, s3_url: str, tmp_path: Path) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    dead = ObjectBlobStore(s3_url, tmp_path / "c3")
    with pytest.raises(StorageUnavailableError, match="try again later") as info:
        dead.has("b" * 64)
    assert "127.0.0.1" not in str(info.value)  # no infrastructure details in the message


def test_multipart_upload_of_a_big_file(
    store: ObjectBlobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(object_blobs, "PART_BYTES", 5 * (1 << 20))  # S3's minimum part size
    big = random.Random(1).randbytes(12 * (1 << 20) + 3)  # three parts
    src = tmp_path / "big.safetensors"
    src.write_bytes(big)
    digest, size = store.put_file(src)
    assert size == len(big) and store.size(digest) == len(big) and store.verify(digest)


def test_concurrent_writers_of_one_digest_leave_one_object(
    store: ObjectBlobStore, s3_endpoint: str, s3_url: str, payload: bytes, tmp_path: Path
) -> None:
    stores = [ObjectBlobStore(s3_url, tmp_path / f"replica{i}") for i in range(4)]
    results: list[tuple[str, int]] = []
    threads = [threading.Thread(target=lambda s=s: results.append(s.put_bytes(payload))) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4 and len(set(results)) == 1
    assert len(bucket_keys(s3_endpoint, s3_url)) == 1 and store.verify(results[0][0])


def test_presigned_url_serves_the_bytes_and_ranges(store: ObjectBlobStore, payload: bytes) -> None:
    digest, _ = store.put_bytes(payload)
    url = store.download_url(digest)
    assert url is not None and "X-Amz-Signature" in url
    assert httpx.get(url).content == payload
    part = httpx.get(url, headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == payload[100:200]


def test_gc_removes_unreferenced_objects_only(store: ObjectBlobStore, s3_endpoint: str, s3_url: str) -> None:
    keep, _ = store.put_bytes(b"keep me")
    drop, _ = store.put_bytes(b"drop me")
    assert store.gc({keep}, grace_seconds=3600).blobs == []  # both are new: the grace period protects them
    result = store.gc({keep}, grace_seconds=0)
    assert result.blobs == [drop] and result.bytes_freed == len(b"drop me")
    assert list(store.digests()) == [keep] and len(bucket_keys(s3_endpoint, s3_url)) == 1
    assert not store.path(drop).exists()


def test_delete(store: ObjectBlobStore) -> None:
    digest, _ = store.put_bytes(b"bye")
    assert store.delete(digest) and not store.has(digest) and not store.delete(digest)


def test_cache_stays_within_its_bound(s3_url: str, tmp_path: Path) -> None:
    store = ObjectBlobStore(s3_url, tmp_path / "cache", cache_bytes=3 * 1000)
    digests = [store.put_bytes(random.Random(i).randbytes(1000))[0] for i in range(8)]
    shutil.rmtree(store.root)
    for d in digests:
        assert store.local_path(d).stat().st_size == 1000
        assert store.cache_usage() <= 3 * 1000
    assert store.path(digests[-1]).exists()  # the one just read stays


def test_a_rebuildable_blob_is_stored_when_first_asked_for(store: ObjectBlobStore) -> None:
    data = b"rebuilt from a shard pool"
    store.materialiser = lambda d: data if d == sha(data) else None
    assert not store.has(sha(data))
    assert store.local_path(sha(data)).read_bytes() == data
    assert store.has(sha(data)) and store.verify(sha(data))


def test_any_obstore_backend_works_and_one_that_cannot_sign_says_so(tmp_path: Path) -> None:
    store = ObjectBlobStore("memory://", tmp_path / "cache")  # GCS and Azure go through the same calls
    digest, _ = store.put_bytes(b"in memory")
    shutil.rmtree(store.root)
    assert store.has(digest) and store.local_path(digest).read_bytes() == b"in memory"
    assert store.download_url(digest) is None  # the server then answers with the bytes itself
    assert store.gc(set(), grace_seconds=0).blobs == [digest] and not store.has(digest)


def test_a_url_that_is_not_object_storage_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidParameterError, match="ADAPTERHUB_BLOB_URL"):
        ObjectBlobStore("/var/lib/blobs", tmp_path)


def test_presigned_urls_can_name_the_endpoint_clients_reach(s3_url: str, s3_endpoint: str, tmp_path: Path) -> None:
    public = s3_endpoint.replace("127.0.0.1", "localhost")  # servers use one address, clients another
    store = ObjectBlobStore(s3_url, tmp_path / "cache", download_endpoint=public)
    digest, _ = store.put_bytes(b"reachable")
    url = store.download_url(digest)
    assert url is not None and url.startswith(public + "/") and httpx.get(url).content == b"reachable"
