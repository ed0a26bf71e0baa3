"""Receiving a commit's files: staged in a private temp folder until the commit is accepted as a whole.

Why stage instead of writing blobs directly: a commit is accepted or refused as a whole, after
every file is in (the adapter is validated from its config *and* its weights). Until then nothing
may reach the blob store or the catalog, so a refused, oversized or truncated upload leaves both
exactly as they were.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeVar

from adapterhub.errors import UploadTooLargeError
from adapterhub.hubformat.rules import DEFAULT_MAX_UPLOAD_BYTES, check_allowed_file, check_repo_path

__all__ = ["StagedFile", "StagedWriter", "UploadStaging", "apply_commit"]

_HEAD_BYTES = 16  # enough of a file's start to recognise a pickle or a zip archive


@dataclass(frozen=True, slots=True)
class StagedFile:
    """A received file waiting for its commit to be validated."""

    path: str
    local_path: Path
    sha256: str
    size: int
    head: bytes


class StagedWriter:
    """Streams one file's bytes into the staging folder, hashing them; see ``UploadStaging.writer``."""

    def __init__(self, staging: UploadStaging, local_path: Path) -> None:
        self._staging = staging
        self.local_path = local_path
        self._file: BinaryIO | None = open(local_path, "wb")
        self._hash = hashlib.sha256()
        self.size = 0
        self.head = b""

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes (charged against the commit's size limit before they are written)."""
        if self._file is None:
            raise RuntimeError("StagedWriter is closed")
        self._staging._charge(len(data))
        if len(self.head) < _HEAD_BYTES:
            self.head += bytes(data[: _HEAD_BYTES - len(self.head)])
        self._file.write(data)
        self._hash.update(data)
        self.size += len(data)

    def close(self) -> str:
        """Close the file; returns its sha256."""
        if self._file is not None:
            self._file.close()
            self._file = None
        return self._hash.hexdigest()


class UploadStaging:
    """The files of one commit, received into a private temp folder before anything is stored.

    ``close`` (or leaving the ``with`` block) removes the folder whether the commit was stored or not.

    Args:
        root: parent folder for the staging folder (on the same disk as the blob store).
        max_bytes: most file bytes the commit may carry, in total.
    """

    STALE_SECONDS = 24 * 3600

    def __init__(self, root: Path, *, max_bytes: int = DEFAULT_MAX_UPLOAD_BYTES) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self._remove_stale(root)
        self.folder = Path(tempfile.mkdtemp(prefix=".upload-", dir=root))
        self.max_bytes = max_bytes
        self.total = 0
        self.files: dict[str, StagedFile] = {}
        self.deletions: list[tuple[str, bool]] = []
        self._count = 0

    @classmethod
    def _remove_stale(cls, root: Path) -> None:
        """Remove staging folders a killed server left behind (untouched for a day)."""
        cutoff = time.time() - cls.STALE_SECONDS
        for entry in root.iterdir():
            try:
                if entry.name.startswith(".upload-") and entry.stat().st_mtime < cutoff:
                    shutil.rmtree(entry, ignore_errors=True)
            except FileNotFoundError:  # another process removed it first
                pass

    @staticmethod
    def check_sizes(sizes: Iterable[int], *, max_bytes: int) -> None:
        """Refuse files whose sizes add up to more than ``max_bytes``: the one size-limit check.

        The server's preupload route calls it with the sizes a client announces, so an oversized
        upload fails before its bytes are sent; staging calls it with the bytes received so far.

        Raises:
            UploadTooLargeError: over the limit.
        """
        total = sum(sizes)
        if total > max_bytes:
            raise UploadTooLargeError(
                f"the commit's files hold at least {total} bytes, more than this server's limit of {max_bytes} "
                "bytes per commit; upload fewer or smaller files (or raise the limit with "
                "`adapterhub serve --max-upload-mb`)"
            )

    def _charge(self, n: int) -> None:
        self.total += n
        self.check_sizes((self.total,), max_bytes=self.max_bytes)

    def writer(self) -> StagedWriter:
        """A writer for the next file (its path may only be known after its bytes, as in NDJSON)."""
        self._count += 1
        return StagedWriter(self, self.folder / f"{self._count:06d}")

    def add(self, path: str, writer: StagedWriter) -> StagedFile:
        """Finish a file under ``path`` (checked; a later file with the same path replaces it).

        Raises:
            InvalidRepoPathError, ForbiddenFileError: the path or the file's first bytes are refused.
        """
        sha256 = writer.close()
        check_repo_path(path)
        check_allowed_file(path, writer.head)
        staged = StagedFile(path, writer.local_path, sha256, writer.size, writer.head)
        self.files[path] = staged
        return staged

    def add_bytes(self, path: str, data: bytes) -> StagedFile:
        """Stage a whole file from memory (small files, tests)."""
        w = self.writer()
        w.write(data)
        return self.add(path, w)

    def delete(self, path: str, *, folder: bool = False) -> None:
        """Record a deletion (of a file, or of everything under a folder)."""
        path = path.rstrip("/") if folder else path
        check_repo_path(path)
        self.deletions.append((path, folder))

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> UploadStaging:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_V = TypeVar("_V")


def apply_commit(base: Mapping[str, _V], staging: UploadStaging) -> dict[str, _V | StagedFile]:
    """The file set after a commit: ``base`` (path -> anything), minus deletions, plus uploads."""
    files: dict[str, _V | StagedFile] = dict(base)
    for path, folder in staging.deletions:
        if folder:
            prefix = path + "/"
            for p in [p for p in files if p.startswith(prefix)]:
                del files[p]
        else:
            files.pop(path, None)
    files.update(staging.files)
    return files
