"""Objects received through the LFS basic transfer, kept by sha256 until a commit names them.

The ``huggingface_hub`` client uploads a large file in two steps: first its bytes (``PUT`` to the
URL the LFS batch API hands out), then a commit whose ``lfsFile`` line names the object by its
sha256 (the "oid"). Between the two, the object lives here, in ``<home>/uploads/lfs``: received
into a temp file while hashed, and renamed onto ``<oid>`` only when its sha256 and size match, so
a name here always holds exactly the bytes its oid says. Nothing reaches the blob store or the
catalog before the commit is validated as a whole (see ``UploadStaging.add_object``).
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import tempfile
import time
from pathlib import Path
from typing import BinaryIO

from adapterhub.errors import InvalidAdapterError, UploadTooLargeError

__all__ = ["LfsObjects", "LfsReceiver", "check_oid", "remove_untouched"]

_OID = re.compile(r"[0-9a-f]{64}")
_TMP_PREFIX = ".recv-"


def check_oid(oid: object) -> str:
    """An LFS object id: 64 lowercase hex digits (a sha256).

    Raises:
        InvalidAdapterError: anything else (it becomes a file name: no path may slip in).
    """
    if not isinstance(oid, str) or not _OID.fullmatch(oid):
        raise InvalidAdapterError("an LFS oid must be the sha256 of the file: 64 lowercase hex digits")
    return oid


class LfsReceiver:
    """Streams one object's bytes to a temp file, hashing them; ``finish`` checks and keeps it."""

    def __init__(self, objects: LfsObjects, oid: str, size: int) -> None:
        self._objects = objects
        self.oid = check_oid(oid)
        self.size = size
        fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=objects.root)
        self._tmp = Path(tmp)
        self._file: BinaryIO | None = os.fdopen(fd, "wb")
        self._hash = hashlib.sha256()
        self.received = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes; more than the announced size is refused at once."""
        if self._file is None:
            raise RuntimeError("LfsReceiver is closed")
        self.received += len(data)
        if self.received > self.size:
            raise UploadTooLargeError(f"the upload is larger than the {self.size} bytes announced for this object")
        self._file.write(data)
        self._hash.update(data)

    def finish(self) -> Path:
        """Keep the object under its oid if its bytes match; otherwise remove them.

        Raises:
            InvalidAdapterError: the size or the sha256 differs from what was announced.
        """
        assert self._file is not None
        self._file.close()
        self._file = None
        digest = self._hash.hexdigest()
        if self.received != self.size or digest != self.oid:
            self.discard()
            what = f"{self.received} bytes" if self.received != self.size else f"sha256 {digest}"
            raise InvalidAdapterError(
                f"the uploaded bytes do not match the LFS object: {what} arrived for oid {self.oid} "
                f"({self.size} bytes); nothing was stored"
            )
        final = self._objects.path(self.oid)
        os.replace(self._tmp, final)
        return final

    def discard(self) -> None:
        """Drop a partial or refused upload."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self._tmp.unlink(missing_ok=True)


class LfsObjects:
    """The received LFS objects of one home (shared by every worker process on it).

    Args:
        root: the folder (created 0700; objects are 0600 like every upload).
    """

    SECRET_NAME = ".url-key"

    def __init__(self, root: Path) -> None:
        self.root = root  # created by the first upload: reading it must not leave folders behind

    def _ensure(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        return self.root

    def path(self, oid: str) -> Path:
        return self.root / check_oid(oid)

    def has(self, oid: str, size: int | None = None) -> bool:
        """Whether the object was received (with this size, if given)."""
        try:
            st = self.path(oid).stat()
        except FileNotFoundError:
            return False
        return size is None or st.st_size == size

    def receiver(self, oid: str, size: int) -> LfsReceiver:
        self._ensure()
        return LfsReceiver(self, oid, size)

    def remove(self, oid: str) -> None:
        """Forget an object (its commit stored it in the blob store)."""
        self.path(oid).unlink(missing_ok=True)

    def url_key(self) -> bytes:
        """The key that signs upload URLs: one per home, so every worker accepts another's URLs.

        Created once (exclusively, 0600); a concurrent creator wins and the loser reads its key.
        """
        path = self._ensure() / self.SECRET_NAME
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            for _ in range(50):  # the winner may not have written it yet
                key = path.read_bytes()
                if len(key) == 32:
                    return key
                time.sleep(0.01)
            raise RuntimeError("the LFS URL key is unreadable") from None
        key = secrets.token_bytes(32)
        with os.fdopen(fd, "wb") as f:
            f.write(key)
        return key

    def remove_stale(self, *, grace_seconds: float = 24 * 3600) -> list[tuple[Path, int]]:
        """Remove objects and partial uploads untouched for ``grace_seconds`` (uploaded, never
        committed, or committed to a store that keeps other bytes); returns each and its size."""
        return remove_untouched(self.root, grace_seconds, keep=(self.SECRET_NAME,))


def remove_untouched(root: Path, grace_seconds: float, *, keep: tuple[str, ...] = ()) -> list[tuple[Path, int]]:
    """Delete the files directly in ``root`` not modified for ``grace_seconds`` (but ``keep``);
    returns each removed file and its size. Uploads waiting for their commit live in such folders."""
    cutoff = time.time() - grace_seconds
    removed: list[tuple[Path, int]] = []
    if not root.is_dir():
        return removed
    for entry in root.iterdir():
        if entry.name in keep:
            continue
        try:
            st = entry.stat()
        except FileNotFoundError:
            continue
        if st.st_mtime < cutoff:
            entry.unlink(missing_ok=True)
            removed.append((entry, st.st_size))
    return removed
