"""BlobStore: layout, atomic writes (nothing left behind on failure), digest checks, gc."""

from __future__ import annotations

import hashlib
import os
import random
import time
from pathlib import Path

import pytest

from adapterhub.errors import (
    BlobCorruptError,
    BlobNotFoundError,
    DigestMismatchError,
    InvalidAdapterError,
    InvalidParameterError,
)
from adapterhub.files import TMP_PREFIX
from adapterhub.store import BlobStore
from adapterhub.store import blobs as blobs_module
from adapterhub.store.blobs import BlobWriter


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "blobs")


@pytest.fixture
def payload() -> bytes:
    # > 2 chunks of 1 MiB so streaming and mid-write failures are exercised; fixed seed.
    return random.Random(0).randbytes(2 * (1 << 20) + 12345)


def test_put_file_layout_and_read_back(store: BlobStore, tmp_path: Path, payload: bytes) -> None:
    src = tmp_path / "adapter_model.safetensors"
    src.write_bytes(payload)
    digest, size = store.put_file(src)
    assert digest == sha(payload) and size == len(payload)
    assert store.path(digest) == store.root / "sha256" / digest[:2] / digest[2:]
    assert all_files(store.root) == [store.path(digest)]
    assert store.has(digest) and store.size(digest) == len(payload) and store.verify(digest)
    with store.open(digest) as f:
        assert f.read() == payload
    assert list(store.digests()) == [digest]


def test_put_file_with_expected_digest(store: BlobStore, tmp_path: Path, payload: bytes) -> None:
    src = tmp_path / "a.bin"
    src.write_bytes(payload)
    assert store.put_file(src, expected_digest=sha(payload)) == (sha(payload), len(payload))
    assert store.verify(sha(payload))


def test_digest_mismatch_leaves_nothing(store: BlobStore, tmp_path: Path, payload: bytes) -> None:
    src = tmp_path / "a.bin"
    src.write_bytes(payload)
    wrong = sha(b"something else")
    with pytest.raises(DigestMismatchError) as info:
        store.put_file(src, expected_digest=wrong)
    assert isinstance(info.value, InvalidAdapterError)
    assert info.value.expected == wrong and info.value.actual == sha(payload)
    assert wrong in str(info.value) and str(src) in str(info.value)
    assert all_files(store.root) == []


def test_mismatch_against_existing_blob_is_detected(store: BlobStore, tmp_path: Path) -> None:
    # The idempotent fast path must still prove that src has the expected content.
    stored = b"x" * 100
    digest, _ = store.put_bytes(stored)
    src = tmp_path / "same-size-other-content.bin"
    src.write_bytes(b"y" * 100)
    with pytest.raises(DigestMismatchError):
        store.put_file(src, expected_digest=digest)
    with store.open(digest) as f:
        assert f.read() == stored


def test_put_is_idempotent(store: BlobStore, tmp_path: Path, payload: bytes) -> None:
    src = tmp_path / "a.bin"
    src.write_bytes(payload)
    digest, _ = store.put_file(src)
    inode = store.path(digest).stat().st_ino
    assert store.put_file(src, expected_digest=digest) == (digest, len(payload))
    assert store.put_file(src) == (digest, len(payload))
    assert store.put_bytes(payload) == (digest, len(payload))
    assert store.path(digest).stat().st_ino == inode  # not rewritten
    assert all_files(store.root) == [store.path(digest)]


def test_truncated_blob_is_repaired_by_put(store: BlobStore, tmp_path: Path, payload: bytes) -> None:
    src = tmp_path / "a.bin"
    src.write_bytes(payload)
    digest, _ = store.put_file(src)
    os.chmod(store.path(digest), 0o644)
    store.path(digest).write_bytes(payload[:100])  # a blob damaged outside adapterhub
    assert not store.verify(digest)
    store.put_file(src, expected_digest=digest)
    assert store.verify(digest) and store.size(digest) == len(payload)


def test_failure_mid_write_leaves_nothing(
    store: BlobStore, tmp_path: Path, payload: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "a.bin"
    src.write_bytes(payload)
    real_write = BlobWriter.write
    calls = {"n": 0}

    def failing_write(self: BlobWriter, data: bytes) -> int:
        calls["n"] += 1
        if calls["n"] == 2:  # after the first MiB reached the temp file
            assert self.temp_path.exists() and self.temp_path.name.startswith(TMP_PREFIX)
            raise OSError(28, "No space left on device")
        return real_write(self, data)

    monkeypatch.setattr(BlobWriter, "write", failing_write)
    with pytest.raises(OSError, match="No space left"):
        store.put_file(src)
    calls["n"] = 0
    with pytest.raises(OSError, match="No space left"):
        store.put_file(src, expected_digest=sha(payload))
    assert calls["n"] == 2
    assert all_files(store.root) == []
    assert not store.has(sha(payload))


def test_failure_at_rename_leaves_nothing(
    store: BlobStore, tmp_path: Path, payload: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "a.bin"
    src.write_bytes(payload)

    def failing_replace(a: object, b: object) -> None:
        raise OSError(5, "I/O error")

    monkeypatch.setattr(blobs_module.os, "replace", failing_replace)
    with pytest.raises(OSError, match="I/O error"):
        store.put_file(src)
    assert all_files(store.root) == []


def test_writer_streams_and_commits(store: BlobStore) -> None:
    chunks = [b"alpha", b"", b"beta" * 1000, b"gamma"]
    with store.writer() as w:
        for chunk in chunks:
            w.write(chunk)
        with pytest.raises(RuntimeError):
            _ = w.digest  # not known before commit
        assert w.size == sum(map(len, chunks))
    data = b"".join(chunks)
    assert (w.digest, w.size) == (sha(data), len(data))
    with store.open(w.digest) as f:
        assert f.read() == data


def test_writer_exception_removes_temp_file(store: BlobStore) -> None:
    with pytest.raises(KeyboardInterrupt):
        with store.writer() as w:
            w.write(b"partial upload")
            temp = w.temp_path
            assert temp.exists()
            raise KeyboardInterrupt
    assert not temp.exists()
    assert all_files(store.root) == []


def test_writer_expected_digest_mismatch(store: BlobStore) -> None:
    with pytest.raises(DigestMismatchError):
        with store.writer(expected_digest=sha(b"declared")) as w:
            w.write(b"actual")
    assert all_files(store.root) == []


@pytest.mark.parametrize(
    "bad",
    ["../../etc/passwd", "A" * 64, "a" * 63, "a" * 65, "sha256:" + "a" * 64, "g" * 64, "a" * 62 + "/x", ""],
)
def test_invalid_digests_rejected(store: BlobStore, bad: str) -> None:
    for call in (store.path, store.has, store.open, store.size, store.verify, store.delete):
        with pytest.raises(InvalidParameterError):
            call(bad)
    with pytest.raises(InvalidParameterError):
        store.put_bytes(b"x", expected_digest=bad)


def test_missing_blob_errors(store: BlobStore) -> None:
    digest = sha(b"never stored")
    assert not store.has(digest) and not store.verify(digest) and not store.delete(digest)
    with pytest.raises(BlobNotFoundError) as info:
        store.open(digest)
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, BlobCorruptError)
    with pytest.raises(BlobNotFoundError):
        store.size(digest)
    assert list(store.digests()) == []


def test_verify_detects_same_size_corruption(store: BlobStore) -> None:
    digest, _ = store.put_bytes(b"0123456789")
    path = store.path(digest)
    os.chmod(path, 0o644)
    path.write_bytes(b"0123456788")
    assert store.has(digest) and not store.verify(digest)


def _age(path: Path, seconds: float) -> None:
    past = time.time() - seconds
    os.utime(path, (past, past))


def test_gc_removes_unreferenced_and_stale_temp(store: BlobStore) -> None:
    keep, _ = store.put_bytes(b"keep")
    drop1, size1 = store.put_bytes(b"drop one")
    drop2, size2 = store.put_bytes(b"drop two!")
    # A temp file left by a killed writer, in the fan-out folder and in the staging folder.
    stale = store.path(keep).parent / f"{TMP_PREFIX}killed"
    stale.write_bytes(b"12345")
    stale2 = store.base / f"{TMP_PREFIX}killed2"
    stale2.write_bytes(b"123")
    assert sorted(store.digests()) == sorted([keep, drop1, drop2])  # temp files are not blobs

    # Everything is fresh: the grace period protects it (a concurrent add may be in flight).
    assert store.gc({keep}).blobs == [] and all(p.exists() for p in (stale, stale2))

    for path in all_files(store.root):
        _age(path, 7200)
    preview = store.gc({keep}, dry_run=True)
    assert preview.blobs == sorted([drop1, drop2]) and store.has(drop1)

    result = store.gc({keep})
    assert result.blobs == sorted([drop1, drop2])
    assert sorted(result.temp_files) == sorted([stale, stale2])
    assert result.bytes_freed == size1 + size2 + 5 + 3
    assert list(store.digests()) == [keep] and all_files(store.root) == [store.path(keep)]
    assert store.gc({keep}, grace_seconds=0).blobs == []


def test_gc_on_empty_store(tmp_path: Path) -> None:
    result = BlobStore(tmp_path / "nothing-here").gc(set(), grace_seconds=0)
    assert result.blobs == [] and result.temp_files == [] and result.bytes_freed == 0


def test_put_refreshes_mtime_of_existing_blob(store: BlobStore) -> None:
    digest, _ = store.put_bytes(b"content")
    _age(store.path(digest), 7200)
    store.put_bytes(b"content")  # re-added just now: gc must not take it
    assert store.gc(set()).blobs == []
