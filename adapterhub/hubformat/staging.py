"""Receiving a commit's files: staged in a private temp folder until the commit is accepted as a whole.

Why stage instead of writing blobs directly: a commit is accepted or refused as a whole, after
every file is in (the adapter is validated from its config *and* its weights). Until then nothing
may reach the blob store or the catalog, so a refused, oversized or truncated upload leaves both
exactly as they were.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeVar

from adapterhub.errors import InvalidAdapterError, UploadTooLargeError
from adapterhub.hubformat.rules import DEFAULT_MAX_UPLOAD_BYTES, HEAD_BYTES, check_allowed_file, check_repo_path

__all__ = ["StagedFile", "StagedWriter", "UploadStaging", "apply_commit"]


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
        # 0600 like every stored file (the folder is 0700 too): uploads may be private weights
        self._file: BinaryIO | None = os.fdopen(os.open(local_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb")
        self._hash = hashlib.sha256()
        self.size = 0
        self.head = b""

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes (charged against the commit's size limit before they are written)."""
        if self._file is None:
            raise RuntimeError("StagedWriter is closed")
        self._staging._charge(len(data))
        if len(self.head) < HEAD_BYTES:  # what the pickle check reads
            self.head += bytes(data[: HEAD_BYTES - len(self.head)])
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
    A killed process cannot, so each folder is named after its host and process id
    (``.upload-<pid>@<host>-<random>``): the next staging on this host removes folders of processes
    that are gone (a restart cleans its own), ``remove_stale`` (called by ``gc``) those untouched for
    a grace period, and a day-old folder goes at any rate.

    Args:
        root: parent folder for the staging folder (on the same disk as the blob store).
        max_bytes: most file bytes the commit may carry, in total.
    """

    STALE_SECONDS = 24 * 3600
    PREFIX = ".upload-"
    _active: set[Path] = set()  # this process's open staging folders (never removed by remove_stale)
    _lock = threading.Lock()

    def __init__(self, root: Path, *, max_bytes: int = DEFAULT_MAX_UPLOAD_BYTES) -> None:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.remove_stale(root)
        with self._lock:
            self.folder = Path(tempfile.mkdtemp(prefix=f"{self.PREFIX}{_owner()}-", dir=root))
            self._active.add(self.folder)
        self.max_bytes = max_bytes
        self.total = 0
        self.files: dict[str, StagedFile] = {}
        self.deletions: list[tuple[str, bool]] = []
        self._count = 0

    @classmethod
    def remove_stale(cls, root: Path, *, grace_seconds: float | None = None) -> list[tuple[Path, int]]:
        """Remove staging folders no upload is using; returns each removed folder and its bytes.

        Removed: folders of a process on this host that has exited (killed mid-upload), and folders
        nothing was written to for ``grace_seconds`` (default a day): another process, or another
        host sharing this home, may still be receiving into a younger one. This process's own open
        folders are always kept, so ``grace_seconds=0`` removes every folder not in use here.
        """
        cutoff = time.time() - (cls.STALE_SECONDS if grace_seconds is None else grace_seconds)
        removed: list[tuple[Path, int]] = []
        if not root.is_dir():
            return removed
        for entry in root.iterdir():
            if not entry.name.startswith(cls.PREFIX):
                continue
            with cls._lock:
                if entry in cls._active:
                    continue
            try:
                newest, size = _newest_mtime_and_size(entry)
            except FileNotFoundError:  # another process removed it first
                continue
            if newest < cutoff or _owner_is_gone(entry.name):
                shutil.rmtree(entry, ignore_errors=True)
                removed.append((entry, size))
        return removed

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
        check_allowed_file(path, writer.head, size=writer.size)
        staged = StagedFile(path, writer.local_path, sha256, writer.size, writer.head)
        self.files[path] = staged
        return staged

    def add_bytes(self, path: str, data: bytes) -> StagedFile:
        """Stage a whole file from memory (small files, tests)."""
        w = self.writer()
        w.write(data)
        return self.add(path, w)

    def add_object(self, path: str, source: Path, sha256: str, size: int | None = None) -> StagedFile:
        """Stage an object received earlier (an LFS upload, or a stored blob) under ``path``.

        The object is hard-linked into this folder (copied across file systems), so it stays
        while the commit is validated even if another commit consumes the original. Its bytes
        were checked against ``sha256`` when received; the size limit, path and pickle checks
        apply here, where the path is known.

        Raises:
            InvalidAdapterError: ``size`` is given and differs from the object's.
            InvalidRepoPathError, ForbiddenFileError, UploadTooLargeError: as for ``add``.
        """
        check_repo_path(path)
        actual = source.stat().st_size
        if size is not None and size != actual:
            raise InvalidAdapterError(f"file '{path}': the commit says {size} bytes, the uploaded object has {actual}")
        self._charge(actual)
        self._count += 1
        local = self.folder / f"{self._count:06d}"
        try:
            os.link(source, local)
        except OSError:
            shutil.copyfile(source, local)
        with open(local, "rb") as f:
            head = f.read(HEAD_BYTES)
        check_allowed_file(path, head, size=actual)
        staged = StagedFile(path, local, sha256, actual, head)
        self.files[path] = staged
        return staged

    def delete(self, path: str, *, folder: bool = False) -> None:
        """Record a deletion (of a file, or of everything under a folder)."""
        path = path.rstrip("/") if folder else path
        check_repo_path(path)
        self.deletions.append((path, folder))

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        with self._lock:
            self._active.discard(self.folder)

    def __enter__(self) -> UploadStaging:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _owner() -> str:
    """``pid@host`` of this process (computed each time: a forked worker has its own pid)."""
    return f"{os.getpid()}@{socket.gethostname()}"


def _newest_mtime_and_size(folder: Path) -> tuple[float, int]:
    """The latest modification time in a staging folder (itself or a file being written) and its bytes."""
    newest, size = folder.stat().st_mtime, 0
    for f in folder.iterdir():
        try:
            st = f.stat()
        except FileNotFoundError:
            continue
        newest, size = max(newest, st.st_mtime), size + st.st_size
    return newest, size


def _owner_is_gone(name: str) -> bool:
    """Whether a staging folder's name says it belongs to a process on this host that has exited."""
    owner = name[len(UploadStaging.PREFIX) :].rpartition("-")[0]
    pid, _, host = owner.partition("@")
    if not pid.isdigit() or int(pid) == os.getpid() or host != socket.gethostname():
        return False  # an older name, this process (its open folders are in _active), or another host
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):
        return False
    return False


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
