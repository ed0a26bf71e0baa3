"""Blobs in object storage (S3 and S3-compatible servers, GCS, Azure), with a local read cache.

Selected by ``ADAPTERHUB_BLOB_URL=s3://bucket/prefix`` (or ``gs://…``, ``az://…``); credentials
and the endpoint come from the usual variables (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_REGION``, ``AWS_ENDPOINT_URL``, ``AWS_ALLOW_HTTP`` for a plain-HTTP server on a private
network; ``GOOGLE_*``, ``AZURE_*``), so a deployment configures it the way it configures every
other tool that talks to its bucket.

Why ``obstore`` (Python bindings of the Rust ``object_store`` crate, the one Apache Arrow and
DataFusion use): one small dependency for S3, GCS and Azure; uploads split into parts sent
concurrently with the GIL released; streamed and ranged reads; presigned URLs; conditional puts.
``s3fs`` would bring aiobotocore and its pinned botocore for S3 alone, and runs its own event-loop
thread; ``boto3`` is S3 only and slower for multipart.

Layout: ``prefix/sha256/ab/cdef…``, the local store's layout, so a bucket can be filled by copying
a home's ``blobs/`` folder (``aws s3 sync``) and read back the same way.

Why writes are safe: an object becomes visible only when its PUT (or the completion of its
multipart upload) succeeds, never half-written, and every put is conditional (``If-None-Match:
*``): the first writer of a digest wins and a second one learns it is already there, which for
content-addressed bytes means done. The bytes are hashed locally before they leave (the local
writer hashes as it writes), and every download is rehashed as it streams into the cache, so a
corrupt object is never used. A crash mid-upload leaves only parts of an incomplete multipart
upload, which are invisible; a bucket lifecycle rule (``AbortIncompleteMultipartUpload``) removes
them.

Why a local cache: engines open weights with ``safetensors`` (memory-mapped files), and the same
adapter is read many times; the cache (``ADAPTERHUB_HOME/blob-cache``, bounded by
``ADAPTERHUB_BLOB_CACHE_MB``, least recently used first out) keeps one verified copy per machine.
The bucket is the truth: ``has``, ``size``, ``verify``, ``digests``, ``delete`` and ``gc`` ask it.
The server does not even fill its cache for downloads: ``download_url`` gives clients a presigned
URL to fetch from the bucket directly.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from datetime import timedelta
from pathlib import Path
from typing import Any, BinaryIO

from adapterhub.errors import (
    BlobCorruptError,
    BlobNotFoundError,
    DigestMismatchError,
    InvalidParameterError,
    StorageUnavailableError,
)
from adapterhub.settings import env_flag
from adapterhub.store.blobs import _DIGEST_RE, BlobStore, GcResult, validate_digest

__all__ = ["DEFAULT_CACHE_BYTES", "ObjectBlobStore", "PART_BYTES"]

log = logging.getLogger(__name__)

PART_BYTES = 16 * 1024 * 1024  # multipart part size: above S3's 5 MiB minimum, few parts per GB
UPLOAD_CONCURRENCY = 8  # parts in flight per upload
DOWNLOAD_CONCURRENCY = 8  # ranges in flight per download of a big blob (one object stream is slow)
DEFAULT_CACHE_BYTES = 20 * 1024**3
URL_LIFETIME = timedelta(minutes=15)  # presigned download URLs: long enough to start a GB download
# A request that fails is retried a few times with backoff, then reported (503), rather than
# holding a server thread for the library's default of several minutes.
RETRY = {"max_retries": 3, "retry_timeout": timedelta(seconds=30)}
CLIENT = {"connect_timeout": "5s", "timeout": "600s"}
SCHEMES = ("s3://", "s3a://", "gs://", "az://", "abfs://", "abfss://", "azure://", "memory://")


def _client_options() -> dict[str, Any]:
    """Timeouts, plus plain HTTP where ``AWS_ALLOW_HTTP`` allows it (explicit options replace the
    ones obstore would read from the environment, so that one is carried over by hand)."""
    options: dict[str, Any] = dict(CLIENT)
    if env_flag("AWS_ALLOW_HTTP"):
        options["allow_http"] = True
    return options


def _obstore() -> Any:
    import obstore  # lazily: only a deployment with a bucket needs it

    return obstore


def _is_not_found(error: BaseException) -> bool:
    return type(error).__name__ == "NotFoundError" or isinstance(error, FileNotFoundError)


def _is_already_there(error: BaseException) -> bool:
    return type(error).__name__ in {"AlreadyExistsError", "PreconditionError"}


class ObjectBlobStore(BlobStore):
    """Content-addressed blobs in a bucket, read through a bounded local cache.

    Args:
        url: ``s3://bucket/prefix`` (also ``gs://``, ``az://``; ``memory://`` for tests).
        cache_root: the local cache folder (a ``BlobStore`` layout).
        cache_bytes: the cache's size bound; least recently used blobs are dropped past it.
        store: an obstore store to use instead of one made from ``url`` (tests).
        download_endpoint: the bucket's endpoint as clients reach it, for presigned URLs
            (``ADAPTERHUB_BLOB_DOWNLOAD_ENDPOINT``; default: the endpoint the servers use).
    """

    remote = True

    def __init__(
        self, url: str, cache_root: Path | str, *, cache_bytes: int = DEFAULT_CACHE_BYTES, store: Any = None,
        download_endpoint: str | None = None,
    ) -> None:
        if not url.startswith(SCHEMES):
            raise InvalidParameterError(
                f"ADAPTERHUB_BLOB_URL must start with one of {', '.join(SCHEMES)}; got {url.split('://')[0]!r}"
            )
        super().__init__(cache_root)
        self.url = url.rstrip("/")
        self.cache_bytes = cache_bytes
        self._cache_total: int | None = None  # bytes in the cache, counted once then kept up (_trim_cache)
        self._cache_lock = threading.Lock()
        try:
            self._store = store if store is not None else _obstore().store.from_url(
                self.url, retry_config=RETRY, client_options=_client_options())
        except Exception as e:  # a malformed URL or missing credentials configuration
            raise InvalidParameterError(f"cannot use ADAPTERHUB_BLOB_URL={self.url}: {e}") from None
        # Presigned URLs name the host that signed them: when servers reach the bucket at a private
        # address, clients get URLs signed for the address they can reach.
        self._signer = self._store
        if download_endpoint:
            try:
                self._signer = _obstore().store.from_url(
                    self.url, endpoint=download_endpoint, retry_config=RETRY, client_options=_client_options())
            except Exception as e:
                raise InvalidParameterError(
                    f"cannot use ADAPTERHUB_BLOB_DOWNLOAD_ENDPOINT={download_endpoint}: {e}") from None

    def __repr__(self) -> str:
        return f"ObjectBlobStore({self.url!r}, cache={str(self.root)!r})"

    # -- talking to the bucket ----------------------------------------------------------------------

    @staticmethod
    def key(digest: str) -> str:
        """The object key of a blob under the store's prefix (validated first)."""
        validate_digest(digest)
        return f"sha256/{digest[:2]}/{digest[2:]}"

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Call obstore; a network or service failure becomes ``StorageUnavailableError``."""
        try:
            return fn(self._store, *args, **kwargs)
        except Exception as e:
            if _is_not_found(e) and "NoSuchBucket" in str(e):
                raise StorageUnavailableError(
                    "the object store has no such bucket; check ADAPTERHUB_BLOB_URL and its credentials"
                ) from None
            if _is_not_found(e) or _is_already_there(e):
                raise
            log.warning("object store %s failed while %s: %s", self.url, what, str(e).splitlines()[0])
            raise StorageUnavailableError(
                f"the object store did not answer while {what} ({type(e).__name__}); nothing was "
                "changed, try again later"
            ) from None

    def _head(self, digest: str) -> dict[str, Any] | None:
        try:
            return self._call("checking a blob", _obstore().head, self.key(digest))
        except Exception as e:
            if _is_not_found(e):
                return None
            raise

    def _upload(self, digest: str, path: Path) -> None:
        """Put the file under the blob's key unless it is there; refresh an old one for ``gc``.

        Why the refresh: ``gc`` keeps objects modified within its grace period, so that a blob
        stored just before its catalog row commits survives. Finding the bytes already there is
        the same moment for this writer, but an object's modification time cannot be touched;
        so an object older than half the grace period is written again (same bytes: harmless).
        """
        obstore = _obstore()
        key = self.key(digest)
        with open(path, "rb") as f:
            try:
                self._call("uploading a blob", obstore.put, key, f, mode="create",
                           chunk_size=PART_BYTES, max_concurrency=UPLOAD_CONCURRENCY)
                return
            except Exception as e:
                if not _is_already_there(e):
                    raise
            meta = self._head(digest)
            if meta is not None and time.time() - meta["last_modified"].timestamp() < 1800:
                return
            f.seek(0)
            self._call("uploading a blob", obstore.put, key, f, mode="overwrite",
                       chunk_size=PART_BYTES, max_concurrency=UPLOAD_CONCURRENCY)

    def _published(self, digest: str, path: Path) -> None:
        self._upload(digest, path)
        self._trim_cache(keep=digest)

    # -- the BlobStore interface, against the bucket ----------------------------------------------

    def has(self, digest: str) -> bool:
        return self._head(digest) is not None

    def size(self, digest: str) -> int:
        meta = self._head(digest)
        if meta is None:
            raise BlobNotFoundError(digest, Path(self.key(digest)))
        return int(meta["size"])

    def link_file(self, src: Path | str, digest: str) -> bool:
        """Upload ``src`` (nothing can be linked into a bucket); the caller vouches for the digest."""
        validate_digest(digest)
        self._upload(digest, Path(src))
        return True

    def _download(self, digest: str) -> Path:
        """Stream the object into the cache through the verifying writer; return its path."""
        obstore = _obstore()
        key = self.key(digest)
        try:
            size = self.size(digest)  # one HEAD: big blobs are fetched as concurrent ranges
            with self.writer(digest, source=f"{self.url}/{key}", publish=False) as w:
                if size > 2 * PART_BYTES:
                    for start in range(0, size, PART_BYTES * DOWNLOAD_CONCURRENCY):
                        stop = min(size, start + PART_BYTES * DOWNLOAD_CONCURRENCY)
                        starts = list(range(start, stop, PART_BYTES))
                        ends = [min(stop, s + PART_BYTES) for s in starts]
                        for chunk in self._call("downloading a blob", obstore.get_ranges, key, starts=starts, ends=ends):
                            w.write(memoryview(chunk))
                else:
                    result = self._call("downloading a blob", obstore.get, key)
                    for chunk in result.stream(min_chunk_size=8 * 1024 * 1024):
                        w.write(memoryview(chunk))
        except DigestMismatchError as e:
            raise BlobCorruptError(
                f"blob {digest} in the object store hashes to {e.actual}: the object is corrupt; "
                "run `adapterhub verify` and restore it"
            ) from None
        self._trim_cache(keep=digest)
        return self.path(digest)

    def local_path(self, digest: str) -> Path:
        """A verified local copy of the blob (downloaded, or rebuilt by ``materialiser``)."""
        path = self.path(digest)
        if path.is_file():
            with suppress(OSError):
                os.utime(path)
            return path
        try:
            return self._download(digest)
        except Exception as e:
            if not _is_not_found(e):
                raise
        return self._materialise(digest)

    def open(self, digest: str) -> BinaryIO:
        return open(self.local_path(digest), "rb")

    def read_range(self, digest: str, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of the blob, read from the bucket without downloading it all."""
        try:
            return bytes(self._call("reading a blob", _obstore().get_range, self.key(digest), start=start, end=end))
        except Exception as e:
            if _is_not_found(e):
                raise BlobNotFoundError(digest, Path(self.key(digest))) from None
            raise

    def download_url(self, digest: str) -> str | None:
        """A presigned GET URL for the blob (uploaded first when only its source is stored).

        None when the backend cannot sign (``memory://``): the caller serves the bytes itself.
        """
        if not self.has(digest):
            self._materialise(digest)  # a packed adapter's weights: rebuilt, stored, then signed
        try:
            return str(_obstore().sign(self._signer, "GET", self.key(digest), URL_LIFETIME))
        except Exception as e:
            if type(e).__name__ in {"NotSupportedError", "TypeError", "AttributeError"}:
                return None
            log.warning("object store %s could not sign a URL: %s", self.url, e)
            return None

    def verify(self, digest: str) -> bool:
        """Rehash the object as it streams from the bucket: True if present and intact."""
        try:
            result = self._call("verifying a blob", _obstore().get, self.key(digest))
        except Exception as e:
            if _is_not_found(e):
                return False
            raise
        h = hashlib.sha256()
        for chunk in result.stream(min_chunk_size=8 * 1024 * 1024):
            h.update(memoryview(chunk))
        return h.hexdigest() == digest

    def _objects(self) -> Iterator[tuple[str, int, float]]:
        """(digest, size, modified) of every blob in the bucket; stray keys are skipped."""
        stream = self._call("listing blobs", _obstore().list, "sha256/", chunk_size=1000)
        for batch in stream:
            for meta in batch:
                parts = str(meta["path"]).split("/")
                digest = "".join(parts[-2:]) if len(parts) >= 3 else ""
                if len(parts[-2]) == 2 and _DIGEST_RE.fullmatch(digest):
                    yield digest, int(meta["size"]), meta["last_modified"].timestamp()

    def digests(self) -> Iterator[str]:
        for digest, _, _ in self._objects():
            yield digest

    def delete(self, digest: str) -> bool:
        existed = self.has(digest)
        if existed:
            self._call("deleting a blob", _obstore().delete, self.key(digest))
        self.path(digest).unlink(missing_ok=True)
        return existed

    def gc(self, referenced: set[str], *, grace_seconds: float = 3600.0, dry_run: bool = False) -> GcResult:
        """Remove unreferenced objects older than the grace period, and the cache's leftovers.

        The grace period protects a blob stored by another process whose catalog row has not
        committed yet (see ``BlobStore.gc``); ``_upload`` rewrites an old object it finds already
        there, so the object's modification time is a sound "last stored" time.
        """
        for digest in referenced:
            validate_digest(digest)
        cutoff = time.time() - grace_seconds
        result = GcResult()
        for digest, size, modified in list(self._objects()):
            if digest in referenced or modified > cutoff:
                continue
            if not dry_run:
                self._call("deleting a blob", _obstore().delete, self.key(digest))
                self.path(digest).unlink(missing_ok=True)
            result.blobs.append(digest)
            result.bytes_freed += size
        for tmp in list(self._temp_files()):  # left in the cache by killed downloads or writers
            with suppress(FileNotFoundError):
                if tmp.stat().st_mtime <= cutoff:
                    if not dry_run:
                        tmp.unlink(missing_ok=True)
                    result.temp_files.append(tmp)
        if not dry_run:
            for digest in list(BlobStore.digests(self)):  # cached copies of what no row references
                if digest not in referenced:
                    self.path(digest).unlink(missing_ok=True)
        result.blobs.sort()
        return result

    # -- the cache ---------------------------------------------------------------------------------

    def _cached(self) -> Iterator[tuple[Path, int, float]]:
        for digest in BlobStore.digests(self):
            path = self.path(digest)
            with suppress(FileNotFoundError):
                st = path.stat()
                yield path, st.st_size, st.st_mtime

    def _trim_cache(self, keep: str) -> None:
        """Drop least recently used cached copies until the cache fits its bound (``keep`` stays).

        Why a running total: scanning the cache on every stored or downloaded blob would cost a
        ``stat`` per cached blob each time. The total is counted once, then grows by each blob
        added (an overestimate when a blob was cached already, or another process shares the
        folder); only when it passes the bound is the folder scanned, trimmed and recounted.
        Removing a file another thread has open or memory-mapped is safe on POSIX: its bytes live
        until that reader closes it.
        """
        kept = self.path(keep)
        with self._cache_lock:
            if self._cache_total is None:
                self._cache_total = self.cache_usage()
            else:
                with suppress(FileNotFoundError):
                    self._cache_total += kept.stat().st_size
            if self._cache_total <= self.cache_bytes:
                return
            entries = sorted(self._cached(), key=lambda e: e[2])
            total = sum(size for _, size, _ in entries)
            for path, size, _ in entries:
                if total <= self.cache_bytes:
                    break
                if path != kept:
                    path.unlink(missing_ok=True)
                    total -= size
            self._cache_total = total

    def cache_usage(self) -> int:
        """Bytes in the local cache now (diagnostics, tests)."""
        return sum(size for _, size, _ in self._cached())

