"""``BlobStore.materialiser``: a missing blob that can be rebuilt is stored through the verifying writer."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from adapterhub.errors import BlobCorruptError, BlobNotFoundError
from adapterhub.store import BlobStore

DATA = b"rebuilt bytes"
DIGEST = hashlib.sha256(DATA).hexdigest()


def test_missing_blob_is_rebuilt_checked_and_stored(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    asked: list[str] = []
    store.materialiser = lambda digest: asked.append(digest) or (DATA if digest == DIGEST else None)
    assert store.local_path(DIGEST).read_bytes() == DATA and asked == [DIGEST]
    assert store.local_path(DIGEST).read_bytes() == DATA and asked == [DIGEST]  # stored: not rebuilt again
    store.delete(DIGEST)
    with store.open(DIGEST) as f:
        assert f.read() == DATA
    other = hashlib.sha256(b"unknown").hexdigest()
    with pytest.raises(BlobNotFoundError):
        store.local_path(other)
    with pytest.raises(BlobNotFoundError):
        store.open(other)


def test_rebuilt_bytes_that_do_not_match_are_refused_and_not_stored(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    store.materialiser = lambda digest: b"something else"
    with pytest.raises(BlobCorruptError, match=f"blob {DIGEST} was rebuilt from its source but hashes to"):
        store.local_path(DIGEST)
    assert not store.has(DIGEST) and list(store.digests()) == []
    assert list(store.root.rglob(".tmp-*")) == []


def test_without_a_materialiser_a_missing_blob_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(BlobNotFoundError):
        BlobStore(tmp_path).local_path(DIGEST)


def test_local_path_marks_a_blob_used_for_gc(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    store.put_bytes(DATA)
    old = 1_000_000_000
    os.utime(store.path(DIGEST), (old, old))
    store.local_path(DIGEST)
    assert store.path(DIGEST).stat().st_mtime > old
    assert store.gc(set(), grace_seconds=3600).blobs == []  # used just now: kept
