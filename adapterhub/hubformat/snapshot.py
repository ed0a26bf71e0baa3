"""What a revision serves: its files (:class:`HubFile`) and the revision itself (:class:`HubSnapshot`).

A file is listed the way the Hugging Face hub lists it, because ``huggingface_hub`` checks what it
downloads against these listings: regular files by their git object id, LFS files (weights, and
anything over :data:`LFS_THRESHOLD`) by their sha256 and the git id of their LFS pointer.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from adapterhub.files import CHUNK
from adapterhub.hubformat.rules import LFS_THRESHOLD

__all__ = ["HubFile", "HubSnapshot", "git_blob_oid"]


def git_blob_oid(data: bytes) -> str:
    """git's object id of a file's bytes (what the hub API calls a regular file's ``oid``)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass(frozen=True, slots=True)
class HubFile:
    """One file of a served revision: its bytes are a blob in the store or generated content.

    Attributes:
        path: path in the repo.
        size: bytes.
        sha256: sha256 of the bytes served (the uploaded ones; for weights committed in canonical
            form, the adapter's digest).
        blob_path: the blob holding the bytes, or None for generated content.
        content: the bytes themselves for generated files (config, a generated model card).
    """

    path: str
    size: int
    sha256: str
    blob_path: Path | None = None
    content: bytes | None = None

    @property
    def lfs(self) -> bool:
        """Listed as an LFS file (large or safetensors), as the Hugging Face hub lists weights."""
        return self.path.endswith(".safetensors") or self.size >= LFS_THRESHOLD

    def read_small(self) -> bytes:
        """The bytes of a small (non-LFS) file."""
        if self.content is not None:
            return self.content
        assert self.blob_path is not None
        return self.blob_path.read_bytes()

    def git_oid(self) -> str:
        """The git object id: of the LFS pointer for LFS files, of the bytes otherwise (streamed)."""
        if self.lfs:
            return git_blob_oid(_lfs_pointer(self.sha256, self.size))
        if self.content is not None:
            return git_blob_oid(self.content)
        assert self.blob_path is not None
        h = hashlib.sha1(b"blob %d\0" % self.size)
        with open(self.blob_path, "rb") as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
        return h.hexdigest()

    @property
    def etag(self) -> str:
        """What ``resolve`` answers as ETag: the sha256 for LFS files, the git oid otherwise."""
        return self.sha256 if self.lfs else self.git_oid()

    def tree_entry(self) -> dict[str, Any]:
        """The file as the hub's tree API lists it."""
        entry: dict[str, Any] = {"type": "file", "oid": self.git_oid(), "size": self.size, "path": self.path}
        if self.lfs:
            pointer_size = len(_lfs_pointer(self.sha256, self.size))
            entry["lfs"] = {"oid": self.sha256, "size": self.size, "pointerSize": pointer_size}
        return entry

    def sibling(self) -> dict[str, Any]:
        """The file as ``model_info``'s ``siblings`` lists it."""
        entry: dict[str, Any] = {"rfilename": self.path, "size": self.size, "blobId": self.git_oid()}
        if self.lfs:
            entry["lfs"] = {
                "sha256": self.sha256,
                "size": self.size,
                "pointerSize": len(_lfs_pointer(self.sha256, self.size)),
            }
        return entry


@dataclass(frozen=True, slots=True)
class HubSnapshot:
    """One revision of a repo as the hub serves it."""

    name: str
    revision: str
    created: datetime
    private: bool
    files: dict[str, HubFile]
    message: str = ""
