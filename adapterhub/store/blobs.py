"""Content-addressed blob store: ``root/sha256/ab/cdef…`` (first two hex characters as a folder).

Why this layout: a blob's name is the sha256 of its bytes, so the same content is stored once, a
name can never point at different bytes, and any blob can be checked by rehashing. The two-character
fan-out keeps folders small (256 of them) on file systems that slow down with huge directories; it
is the layout git and the Hugging Face cache use.

Why writes look the way they do: a crash must never leave a half-written file under a final name.
Every write goes to a temp file (prefix ``.tmp-``) on the same file system, is hashed while it is
copied, is fsynced, and only then is renamed onto its final name with ``os.replace`` (atomic on POSIX
and Windows); the folder is fsynced too so the rename itself survives a power cut. Temp files left by
a killed process are recognisable by their prefix and removed by ``gc``.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from adapterhub.errors import BlobCorruptError, BlobNotFoundError, DigestMismatchError, InvalidParameterError
from adapterhub.files import CHUNK, TMP_PREFIX, fsync_dir, sha256_file

__all__ = ["BlobStore", "BlobWriter", "GcResult", "validate_digest"]

_DIGEST_RE = re.compile(r"[0-9a-f]{64}")
BLOB_MODE = 0o600  # private weights: readable by the server's user only, whatever the umask


def validate_digest(digest: str) -> str:
    """Return ``digest`` if it is 64 lowercase hex characters, else raise.

    This is the only check between a digest that came from a user or an HTTP client and a file
    path, so it is strict: no uppercase, no prefixes such as ``sha256:``, nothing that could be a
    path component.

    Raises:
        InvalidParameterError: the string is not a sha256 hex digest.
    """
    if not isinstance(digest, str) or _DIGEST_RE.fullmatch(digest) is None:
        raise InvalidParameterError(
            f"invalid blob digest {digest!r}: expected 64 lowercase hex characters (a sha256)"
        )
    return digest


@dataclass
class GcResult:
    """What ``BlobStore.gc`` removed.

    Attributes:
        blobs: digests of unreferenced blobs that were deleted.
        temp_files: stale temp files (left by killed writers) that were deleted.
        bytes_freed: total size of everything removed.
    """

    blobs: list[str] = field(default_factory=list)
    temp_files: list[Path] = field(default_factory=list)
    bytes_freed: int = 0


class BlobWriter:
    """A streaming write of bytes whose digest is not known up front (e.g. an HTTP upload).

    Use through ``BlobStore.writer()``; after the ``with`` block exits cleanly the bytes are stored
    under ``digest`` and ``size`` is their length. If the block raises, the temp file is removed and
    nothing is stored.
    """

    def __init__(
        self, store: BlobStore, expected_digest: str | None, source: str | None = None, *, publish: bool = True
    ) -> None:
        self._store = store
        self._publish = publish
        self._expected = validate_digest(expected_digest) if expected_digest is not None else None
        self._source = source
        self._hash = hashlib.sha256()
        self._size = 0
        self._digest: str | None = None
        # Temp file in the final folder when the digest is known, else in ``sha256/`` itself: both
        # are on the same file system as the final name, so the rename is atomic either way.
        folder = store.path(self._expected).parent if self._expected else store.base
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=folder)
        self._tmp = Path(tmp)
        self._file: BinaryIO | None = os.fdopen(fd, "wb")

    @property
    def digest(self) -> str:
        """The sha256 of the bytes written; available after a clean exit of the ``with`` block."""
        if self._digest is None:
            raise RuntimeError("BlobWriter.digest is known only after the with-block has exited cleanly")
        return self._digest

    @property
    def size(self) -> int:
        """Bytes written so far (the blob size after the ``with`` block)."""
        return self._size

    @property
    def temp_path(self) -> Path:
        """Where the bytes are being written before commit (for diagnostics and tests)."""
        return self._tmp

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Append ``data``; hashed as it is written, so no second pass over the bytes is needed."""
        if self._file is None:
            raise RuntimeError("BlobWriter is closed")
        self._file.write(data)
        self._hash.update(data)
        self._size += len(data)
        return len(data)

    def _commit(self) -> None:
        assert self._file is not None
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None
        digest = self._hash.hexdigest()
        if self._expected is not None and digest != self._expected:
            self._discard()
            raise DigestMismatchError(expected=self._expected, actual=digest, source=self._source)
        final = self._store.path(digest)
        if final.is_file() and final.stat().st_size == self._size:
            # Same content already stored (content addressing makes this safe): keep the old file,
            # refresh its mtime so a concurrent gc's grace period protects it, drop ours.
            self._discard()
            os.utime(final)
        else:
            final.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(self._tmp, BLOB_MODE)
            os.replace(self._tmp, final)
            fsync_dir(final.parent)
        if self._publish:
            self._store._published(digest, final)
        self._digest = digest

    def _discard(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None:
            self._discard()
            return
        try:
            self._commit()
        except BaseException:
            self._discard()
            raise


class BlobStore:
    """Immutable blobs named by their sha256, under ``root/sha256/ab/cdef…``.

    Args:
        root: folder of the store (``ADAPTERHUB_HOME/blobs``); created on first write.

    Example:
        >>> store = BlobStore(Path("/tmp/blobs"))          # doctest: +SKIP
        >>> digest, size = store.put_file(Path("adapter_model.safetensors"))  # doctest: +SKIP
        >>> with store.open(digest) as f: header = f.read(8)  # doctest: +SKIP
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.base = self.root / "sha256"
        # Rebuilds a blob that is not stored but can be derived (a packed adapter's weights, from
        # its shard pool): digest -> its bytes, or None when it knows no way. Set by the layer that
        # knows how (``app.hub.AdapterHub``); the store itself knows nothing of what blobs mean.
        self.materialiser: Callable[[str], bytes | None] | None = None

    def __repr__(self) -> str:
        return f"BlobStore({str(self.root)!r})"

    #: Whether blobs live elsewhere and ``path()`` is only a local cache (``ObjectBlobStore``).
    remote = False

    def _published(self, digest: str, path: Path) -> None:
        """Hook: a blob has just landed (or was found) under its final local name ``path``.

        Nothing to do for a local store; a remote store uploads it (``ObjectBlobStore``).
        """

    def download_url(self, digest: str) -> str | None:
        """A URL a client can fetch the blob from directly, or None (a local store has none)."""
        return None

    # -- naming -----------------------------------------------------------------------------------

    def path(self, digest: str) -> Path:
        """The final path of a blob (whether or not it exists).

        Raises:
            InvalidParameterError: ``digest`` is not 64 lowercase hex characters.
        """
        validate_digest(digest)
        return self.base / digest[:2] / digest[2:]

    def has(self, digest: str) -> bool:
        """Whether the blob is stored (a file under its final name; temp files never count)."""
        return self.path(digest).is_file()

    # -- writing ----------------------------------------------------------------------------------

    def writer(
        self, expected_digest: str | None = None, *, source: str | None = None, publish: bool = True
    ) -> BlobWriter:
        """Start a streaming write; use as ``with store.writer() as w: w.write(chunk)``.

        Args:
            expected_digest: if given, the commit fails with ``DigestMismatchError`` (and leaves
                nothing behind) unless the bytes hash to it.
            source: a name for the bytes, used only in error messages.
            publish: hand the blob to ``_published`` (False for bytes that came *from* the remote).
        """
        return BlobWriter(self, expected_digest, source, publish=publish)

    def put_file(self, src: Path | str, expected_digest: str | None = None) -> tuple[str, int]:
        """Copy ``src`` into the store; return ``(digest, size)``.

        Idempotent: when ``expected_digest`` is already stored with the same size, ``src`` is only
        hashed (to prove it really has that content) and nothing is written.

        Raises:
            DigestMismatchError: ``src`` does not hash to ``expected_digest``; nothing is stored.
            FileNotFoundError: ``src`` does not exist.
        """
        src = Path(src)
        if expected_digest is not None:
            final = self.path(expected_digest)
            src_size = src.stat().st_size
            if final.is_file() and final.stat().st_size == src_size:
                digest, size = sha256_file(src)
                if digest != expected_digest:
                    raise DigestMismatchError(expected=expected_digest, actual=digest, source=str(src))
                os.utime(final)
                self._published(digest, final)
                return digest, size
        with open(src, "rb") as f, self.writer(expected_digest, source=str(src)) as w:
            while chunk := f.read(CHUNK):
                w.write(chunk)
        return w.digest, w.size

    def temp_file(self) -> Path:
        """A new empty temp file in the store (same file system as every blob) to fill, then ``adopt``.

        Left behind by a crash, it is removed by ``gc`` (its name has the temp prefix).
        """
        self.base.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=self.base)
        os.close(fd)
        return Path(tmp)

    def adopt(self, tmp: Path, digest: str) -> None:
        """Move a complete file from ``temp_file`` (or a link to one) into place under ``digest``.

        For bytes the caller has *just hashed* while producing them (a pull reads a downloaded file
        once, hashing and checking it, and writes or links it here): rehashing would add a pass.
        A wrong digest would be a bug in the caller; ``verify`` would report it. The file is
        fsynced, made private and renamed atomically; if the blob is already stored, ``tmp`` is
        dropped and the stored one kept (its mtime refreshed for ``gc``'s grace period).
        """
        final = self.path(digest)
        size = tmp.stat().st_size
        if final.is_file() and final.stat().st_size == size:
            tmp.unlink(missing_ok=True)
            os.utime(final)
            self._published(digest, final)
            return
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, BLOB_MODE)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)
        fsync_dir(final.parent)
        self._published(digest, final)

    def link_file(self, src: Path | str, digest: str) -> bool:
        """Store ``src`` under ``digest`` as a hard link (no copy); False when it cannot be linked.

        Why: a pulled file already sits in the Hugging Face cache, on the same disk as the store
        in the usual setup; linking stores its bytes once instead of twice. The link shares the
        inode, so the cache's file becomes private (0600) like every blob; Hugging Face never
        rewrites a cache file in place (it writes a new one and renames it), so the blob cannot
        change under the store. The caller vouches for the digest, as for ``adopt``.

        Returns:
            ``True`` when stored (or already stored); ``False`` when the file system refuses the
            link (another device, links not allowed, a file owned by another user), and then
            nothing was changed: copy it instead (``put_file``).
        """
        if self.has(digest) and self.size(digest) == os.path.getsize(src):
            os.utime(self.path(digest))
            return True
        self.base.mkdir(parents=True, exist_ok=True)
        tmp = self.base / f"{TMP_PREFIX}{secrets.token_hex(8)}"
        try:
            os.link(os.path.realpath(src), tmp)  # the file itself, not a symlink to it (HF snapshots)
        except OSError:
            return False
        try:
            if hasattr(os, "geteuid") and os.stat(tmp).st_uid != os.geteuid():  # not ours to make private
                tmp.unlink()
                return False
            os.utime(tmp)  # a file cached long ago must not look old to a concurrent gc before its row commits
            self.adopt(tmp, digest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return True

    def put_bytes(self, data: bytes, expected_digest: str | None = None) -> tuple[str, int]:
        """Store ``data`` (small payloads, tests); same guarantees as ``put_file``."""
        with self.writer(expected_digest) as w:
            w.write(data)
        return w.digest, w.size

    # -- reading ----------------------------------------------------------------------------------

    def _materialise(self, digest: str) -> Path:
        """Store a missing blob rebuilt by ``materialiser``, through the verifying writer.

        Raises:
            BlobNotFoundError: no materialiser, or it does not know the digest.
            BlobCorruptError: the rebuilt bytes do not hash to ``digest`` (nothing is stored).
        """
        path = self.path(digest)
        data = self.materialiser(digest) if self.materialiser is not None else None
        if data is None:
            raise BlobNotFoundError(digest, path)
        try:
            self.put_bytes(data, digest)
        except DigestMismatchError as e:
            raise BlobCorruptError(
                f"blob {digest} was rebuilt from its source but hashes to {e.actual}; its source "
                "(e.g. a shard pool) is corrupt or was written by another version; run `adapterhub verify`"
            ) from None
        return path

    def local_path(self, digest: str) -> Path:
        """The path of a stored blob, rebuilt first by ``materialiser`` when it is missing.

        Each call refreshes the blob's mtime: a blob that can be rebuilt is dropped by ``gc``
        only once it has not been used for the grace period.

        Raises:
            BlobNotFoundError: not stored and cannot be rebuilt.
            BlobCorruptError: rebuilt bytes that do not match the digest.
        """
        path = self.path(digest)
        if path.is_file():
            with suppress(OSError):  # a read-only store still reads
                os.utime(path)
            return path
        return self._materialise(digest)

    def open(self, digest: str) -> BinaryIO:
        """A binary read stream of the blob (the caller closes it); rebuilt first when missing and
        ``materialiser`` can (see ``local_path``).

        Raises:
            BlobNotFoundError: not stored and cannot be rebuilt.
            BlobCorruptError: rebuilt bytes that do not match the digest.
        """
        path = self.path(digest)
        try:
            return open(path, "rb")
        except FileNotFoundError:
            pass
        self._materialise(digest)
        try:
            return open(path, "rb")
        except FileNotFoundError:  # removed again at once (a concurrent gc with grace 0)
            raise BlobNotFoundError(digest, path) from None

    def size(self, digest: str) -> int:
        """Size of the stored blob in bytes.

        Raises:
            BlobNotFoundError: not stored.
        """
        path = self.path(digest)
        try:
            return path.stat().st_size
        except FileNotFoundError:
            raise BlobNotFoundError(digest, path) from None

    def verify(self, digest: str) -> bool:
        """Rehash the blob: True if stored and intact, False if missing or corrupt."""
        path = self.path(digest)
        try:
            actual, _ = sha256_file(path)
        except FileNotFoundError:
            return False
        return actual == digest

    def digests(self) -> Iterator[str]:
        """Every stored digest (temp files and stray names are skipped), in no particular order."""
        if not self.base.is_dir():
            return
        for fan in os.scandir(self.base):
            if not fan.is_dir(follow_symlinks=False) or len(fan.name) != 2:
                continue
            for entry in os.scandir(fan.path):
                digest = fan.name + entry.name
                if entry.is_file(follow_symlinks=False) and _DIGEST_RE.fullmatch(digest):
                    yield digest

    # -- removing ---------------------------------------------------------------------------------

    def delete(self, digest: str) -> bool:
        """Remove a blob; returns whether it existed. The caller makes sure nothing references it."""
        path = self.path(digest)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        return True

    def _temp_files(self) -> Iterator[Path]:
        if not self.base.is_dir():
            return
        for entry in os.scandir(self.base):
            if entry.name.startswith(TMP_PREFIX) and entry.is_file(follow_symlinks=False):
                yield Path(entry.path)
            elif entry.is_dir(follow_symlinks=False):
                for sub in os.scandir(entry.path):
                    if sub.name.startswith(TMP_PREFIX) and sub.is_file(follow_symlinks=False):
                        yield Path(sub.path)

    def gc(
        self, referenced: set[str], *, grace_seconds: float = 3600.0, dry_run: bool = False
    ) -> GcResult:
        """Remove blobs not in ``referenced`` and temp files left by killed writers.

        Why a grace period: another process may have just stored a blob and not yet committed the
        catalog row that references it (or may still be streaming into a temp file). Anything
        modified less than ``grace_seconds`` ago is kept; ``put_file`` refreshes the mtime of a
        blob it finds already stored for the same reason. Pass ``grace_seconds=0`` only when no
        other process can be writing.

        Args:
            referenced: digests the catalog still points at (``Catalog.referenced_digests()``).
            grace_seconds: keep anything newer than this.
            dry_run: report what would be removed without removing it.
        """
        for digest in referenced:
            validate_digest(digest)
        cutoff = time.time() - grace_seconds
        result = GcResult()
        for tmp in list(self._temp_files()):
            try:
                st = tmp.stat()
            except FileNotFoundError:
                continue
            if st.st_mtime > cutoff:
                continue
            if not dry_run:
                tmp.unlink(missing_ok=True)
            result.temp_files.append(tmp)
            result.bytes_freed += st.st_size
        for digest in list(self.digests()):
            if digest in referenced:
                continue
            path = self.path(digest)
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            if st.st_mtime > cutoff:
                continue
            if not dry_run:
                path.unlink(missing_ok=True)
            result.blobs.append(digest)
            result.bytes_freed += st.st_size
        result.blobs.sort()
        return result
