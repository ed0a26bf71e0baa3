"""Hub sync: the repo format adapterhub speaks, and the ``huggingface_hub`` client side of it.

Two halves, both used only by the facade (``AdapterHub.push``/``pull`` and the ``hub_*`` methods
that ``adapterhub serve`` calls):

- **Repo format** (server side too): which paths a repo may hold (:func:`check_repo_path`), which
  files are refused (anything that can carry a pickle: :func:`check_allowed_file`), how a commit's
  files are received before anything is stored (:class:`UploadStaging`), and what a revision serves
  (:class:`HubFile`, :class:`HubSnapshot`).
- **Client** (:class:`HubClient`): ``HfApi`` and ``snapshot_download`` with the endpoint, token and
  offline mode read from ``HF_ENDPOINT``, ``HF_TOKEN`` and ``HF_HUB_OFFLINE`` at call time (the
  library reads them once, at import), and every ``huggingface_hub`` error turned into a
  ``HubError``/``AuthError`` whose message says what to do.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from adapterhub.errors import (
    AdapterHubError,
    AdapterNotFoundError,
    AuthError,
    HubError,
    InvalidAdapterError,
    InvalidNameError,
    InvalidParameterError,
)
from adapterhub.lora import CONFIG_NAME, WEIGHTS_NAME

__all__ = [
    "DEFAULT_MAX_UPLOAD_BYTES",
    "README_NAME",
    "CommitConflictError",
    "EntryNotFoundError",
    "ForbiddenFileError",
    "HubClient",
    "HubFile",
    "HubRevisionNotFoundError",
    "HubSnapshot",
    "InvalidRepoPathError",
    "InvalidTokenError",
    "RemoteRevision",
    "RepoNotFoundError",
    "StagedFile",
    "UploadStaging",
    "UploadTooLargeError",
    "check_allowed_file",
    "check_repo_path",
    "git_blob_oid",
]

README_NAME = "README.md"
DEFAULT_MAX_UPLOAD_BYTES = 2 * 1024**3  # 2 GiB of file bytes per commit
LFS_THRESHOLD = 10 * 1024**2  # files this large are listed as LFS files, as the Hugging Face hub does
_CHUNK = 1 << 20

# Formats that can hold a pickle (torch .bin/.pt are pickles or zip archives of pickles; numpy
# .npy/.npz can hold object arrays; joblib/dill are pickles), plus compiled Python. The hub stores
# weights as safetensors only, so none of these is ever accepted, whatever it is called inside.
FORBIDDEN_SUFFIXES = frozenset(
    {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".dill", ".npy", ".npz", ".pyc", ".pyo", ".mar"}
)
_ZIP_MAGIC = b"PK\x03\x04"


# -- errors (the server maps them to hub error codes through their ``hub_error_code``) ------------


class RepoNotFoundError(AdapterNotFoundError):
    """No repo (catalog entry or created hub repo) has this id."""

    hub_error_code = "RepoNotFound"

    def __init__(self, name: str) -> None:
        self.name = name
        AdapterHubError.__init__(
            self, f"no repo named '{name}' on this hub; create it first (`HfApi.create_repo`) or check the id"
        )


class HubRevisionNotFoundError(AdapterNotFoundError):
    """The repo exists but has no such revision (or no revision at all yet)."""

    hub_error_code = "RevisionNotFound"

    def __init__(self, name: str, revision: str, detail: str = "") -> None:
        self.name = name
        self.revision = revision
        AdapterHubError.__init__(
            self, f"repo '{name}' has no revision '{revision}'{detail}; use 'main' or a commit id it lists"
        )


class EntryNotFoundError(AdapterNotFoundError):
    """The revision exists but holds no file at this path."""

    hub_error_code = "EntryNotFound"

    def __init__(self, name: str, revision: str, path: str) -> None:
        self.name = name
        self.revision = revision
        self.path = path
        AdapterHubError.__init__(
            self, f"repo '{name}' at revision {revision[:12]} has no file '{path}'; list its files with the tree API"
        )


class InvalidRepoPathError(InvalidNameError):
    """A path in a repo that could escape it or is not portable (``..``, absolute, backslashes)."""


class ForbiddenFileError(InvalidAdapterError):
    """A file the hub never stores: pickled weights or compiled code."""


class UploadTooLargeError(InvalidAdapterError):
    """A commit carries more bytes than the server's limit."""


class CommitConflictError(InvalidParameterError):
    """The commit was built on a revision that is no longer the head."""


class InvalidTokenError(AuthError):
    """A token was sent but is unknown or revoked (hub clients expect this exact message header)."""

    hub_error_message = "Invalid credentials in Authorization header"


# -- repo format ---------------------------------------------------------------------------------


def check_repo_path(path: Any) -> str:
    """Return ``path`` if it is a safe relative path inside a repo, else raise.

    Refused: empty paths, absolute paths, backslashes, drive letters, ``.``/``..``/empty segments,
    control characters, ``.git`` folders and paths over 1024 characters. Nothing is normalised: a
    path that needs normalising is refused, so what a client sends is exactly what is stored.

    Raises:
        InvalidRepoPathError: with the rule that was broken.
    """
    if not isinstance(path, str) or not path:
        raise InvalidRepoPathError(f"invalid path in repo {path!r}: give a relative path such as 'README.md'")
    why = None
    if len(path) > 1024:
        why = "it is longer than 1024 characters"
    elif path.startswith("/"):
        why = "absolute paths are not allowed"
    elif "\\" in path:
        why = "backslashes are not allowed; use '/' between folders"
    elif any(ord(c) < 32 or ord(c) == 127 for c in path):
        why = "control characters are not allowed"
    elif len(path) >= 2 and path[1] == ":":
        why = "drive letters are not allowed"
    else:
        parts = path.split("/")
        if any(part in ("", ".", "..") for part in parts):
            why = "'.', '..' and empty segments are not allowed"
        elif ".git" in parts:
            why = "'.git' folders are not allowed"
    if why:
        raise InvalidRepoPathError(f"invalid path in repo {path!r}: {why}")
    return path


def check_allowed_file(path: str, head: bytes = b"") -> None:
    """Refuse files that can carry a pickle, by name and by their first bytes.

    Args:
        path: the file's path in the repo (already checked by :func:`check_repo_path`).
        head: the file's first bytes, when known (a zip archive or a protocol-2+ pickle is refused
            whatever its name).

    Raises:
        ForbiddenFileError: the file is refused.
    """
    suffix = Path(path).suffix.lower()
    if suffix in FORBIDDEN_SUFFIXES:
        raise ForbiddenFileError(
            f"'{path}': {suffix} files can hold pickled code and are never stored; "
            f"convert the weights to {WEIGHTS_NAME} (safetensors) and upload that instead"
        )
    if head.startswith(_ZIP_MAGIC) or (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5):
        raise ForbiddenFileError(
            f"'{path}' is a pickle or zip archive (torch.save format); the hub stores safetensors and text only"
        )


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
        sha256: sha256 of the bytes (the weights' is the adapter's canonical digest).
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
            while chunk := f.read(_CHUNK):
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
            entry["lfs"] = {"oid": self.sha256, "size": self.size, "pointerSize": len(_lfs_pointer(self.sha256, self.size))}
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
        if self._file is None:
            raise RuntimeError("StagedWriter is closed")
        self._staging._charge(len(data))
        if len(self.head) < 16:
            self.head += bytes(data[: 16 - len(self.head)])
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

    Why stage instead of writing blobs directly: a commit is accepted or refused as a whole, after
    every file is in (the adapter is validated from its config *and* its weights). Until then
    nothing may reach the blob store or the catalog, so a refused, oversized or truncated upload
    leaves both exactly as they were; ``close`` removes the folder either way.

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

    def _charge(self, n: int) -> None:
        self.total += n
        if self.total > self.max_bytes:
            raise UploadTooLargeError(
                f"the commit carries more than {self.max_bytes} bytes of files, the server's limit; "
                "upload fewer or smaller files (or raise the limit with `adapterhub serve --max-upload-mb`)"
            )

    def check_sizes(self, sizes: list[int]) -> None:
        """Refuse up front what would go over the limit (from sizes a client announces)."""
        if sum(sizes) > self.max_bytes:
            self._charge(sum(sizes))

    def writer(self) -> StagedWriter:
        """A writer for the next file (its path may only be known after its bytes, as in NDJSON)."""
        self._count += 1
        return StagedWriter(self, self.folder / f"{self._count:06d}")

    def add(self, path: str, writer: StagedWriter) -> StagedFile:
        """Finish a file under ``path`` (checked; a later file with the same path replaces it)."""
        sha256 = writer.close()
        check_repo_path(path)
        check_allowed_file(path, writer.head)
        staged = StagedFile(path, writer.local_path, sha256, writer.size, writer.head)
        self.files[path] = staged
        return staged

    def add_bytes(self, path: str, data: bytes) -> StagedFile:
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


def apply_commit(base: dict[str, Any], staging: UploadStaging) -> dict[str, Any]:
    """The file set after a commit: ``base`` (path -> anything), minus deletions, plus uploads."""
    files = dict(base)
    for path, folder in staging.deletions:
        if folder:
            prefix = path + "/"
            for p in [p for p in files if p.startswith(prefix)]:
                del files[p]
        else:
            files.pop(path, None)
    files.update(staging.files)
    return files


# -- client --------------------------------------------------------------------------------------


def _env_true(name: str) -> bool:
    return (os.environ.get(name) or "").strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True, slots=True)
class RemoteRevision:
    """A resolved revision of a remote repo: its commit id and what its files should hash to."""

    repo_id: str
    sha: str
    lfs_sha256: dict[str, str] = field(default_factory=dict)
    files: tuple[str, ...] = ()


class HubClient:
    """``huggingface_hub`` with settings from the environment at call time and friendly errors.

    Args:
        endpoint: hub URL; default ``HF_ENDPOINT``, else ``https://huggingface.co``.
        token: access token; default ``HF_TOKEN``, else whatever ``huggingface_hub`` finds
            (``hf auth login``).
    """

    def __init__(self, *, endpoint: str | None = None, token: str | None = None) -> None:
        self.endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
        self.token = token or os.environ.get("HF_TOKEN") or None
        # Same rule as huggingface_hub: HF_HUB_OFFLINE, else the older TRANSFORMERS_OFFLINE.
        self.offline = _env_true("HF_HUB_OFFLINE") if os.environ.get("HF_HUB_OFFLINE") else _env_true("TRANSFORMERS_OFFLINE")
        cache = os.environ.get("HF_HUB_CACHE") or (
            str(Path(os.environ["HF_HOME"]) / "hub") if os.environ.get("HF_HOME") else None
        )
        self.cache_dir = cache

    def _api(self) -> Any:
        from huggingface_hub import HfApi

        return HfApi(endpoint=self.endpoint, token=self.token)

    @contextmanager
    def _session(self, repo_id: str, revision: str | None) -> Iterator[None]:
        """Apply this client's offline mode to the library and translate its errors."""
        from huggingface_hub import constants

        saved = constants.HF_HUB_OFFLINE
        constants.HF_HUB_OFFLINE = self.offline
        try:
            yield
        except AdapterHubError:
            raise
        except Exception as e:  # noqa: BLE001 - every library error is translated or re-raised
            translated = self._translate(e, repo_id, revision)
            if translated is None:
                raise
            raise translated from e
        finally:
            constants.HF_HUB_OFFLINE = saved

    def _translate(self, e: Exception, repo_id: str, revision: str | None) -> AdapterHubError | None:
        """One place where ``huggingface_hub`` errors become adapterhub errors with a next step."""
        from huggingface_hub import errors as hf

        try:  # huggingface_hub 1.x+ speaks httpx2; older releases used requests
            import httpx2

            unreachable: tuple[type[BaseException], ...] = (httpx2.ConnectError, httpx2.TimeoutException)
        except ImportError:  # pragma: no cover - depends on the installed huggingface_hub
            unreachable = (ConnectionError, TimeoutError)
        entry_missing = getattr(hf, "RemoteEntryNotFoundError", hf.EntryNotFoundError)

        where = f"'{repo_id}'" + (f" at revision '{revision}'" if revision else "") + f" on {self.endpoint}"
        detail = f" (server said: {e.server_message})" if getattr(e, "server_message", None) else ""
        if isinstance(e, hf.GatedRepoError):
            return AuthError(
                f"{where} is gated: accept its conditions on the repo's page, then set HF_TOKEN to a token of "
                "that account (or pass --token)"
            )
        if isinstance(e, hf.RevisionNotFoundError):
            return HubError(f"{where}: no such revision; check the branch, tag or commit id (default 'main')")
        if isinstance(e, hf.RepositoryNotFoundError):
            return HubError(
                f"repository {where} not found, or it is private and the token cannot see it; check the repo id "
                "and HF_ENDPOINT, and set HF_TOKEN (or --token) for private repos"
            )
        if isinstance(e, entry_missing):
            return HubError(f"{where}: a needed file is missing{detail}; is this a PEFT LoRA adapter repo?")
        if isinstance(e, (hf.OfflineModeIsEnabled, hf.LocalEntryNotFoundError)):
            return HubError(
                f"offline (HF_HUB_OFFLINE is set) and {where} is not in the local cache; unset HF_HUB_OFFLINE "
                "to download it, or pull a revision that was downloaded before"
            )
        if isinstance(e, hf.HfHubHTTPError):
            status = e.response.status_code if e.response is not None else None
            if status in (401, 403):
                return AuthError(
                    f"the hub refused the request for {where} (HTTP {status}){detail}; set HF_TOKEN or pass --token "
                    "with a token allowed to do this (`adapterhub token create` on an adapterhub server)"
                )
            return HubError(f"hub request for {where} failed with HTTP {status}{detail}")
        if isinstance(e, unreachable):
            return HubError(f"cannot reach {self.endpoint} ({e}); check HF_ENDPOINT and the network")
        if isinstance(e, ValueError) and "README.md" in str(e):
            return HubError(f"the hub refused the model card of {where}: {e}")
        return None

    # -- push ------------------------------------------------------------------------------------

    def push_folder(
        self,
        folder: Path,
        repo_id: str,
        *,
        revision: str = "main",
        private: bool = False,
        commit_message: str,
    ) -> tuple[str, str]:
        """Create the repo if needed and upload ``folder`` as one commit; returns (commit id, url).

        Raises:
            HubError, AuthError: see ``_translate``.
        """
        if self.offline:
            raise HubError("cannot push while offline: HF_HUB_OFFLINE is set; unset it to push")
        with self._session(repo_id, revision):
            api = self._api()
            url = api.create_repo(repo_id, private=private, exist_ok=True)
            if revision != "main":
                api.create_branch(repo_id, branch=revision, exist_ok=True)
            info = api.upload_folder(
                repo_id=repo_id, folder_path=str(folder), revision=revision, commit_message=commit_message
            )
        return info.oid, str(url)

    # -- pull ------------------------------------------------------------------------------------

    def resolve(self, repo_id: str, revision: str | None = None) -> RemoteRevision:
        """The commit id a revision points to now (offline: the cached snapshot's).

        Raises:
            HubError, AuthError: not found, unauthorised, gated, offline and not cached.
        """
        if self.offline:
            folder = self.download(repo_id, revision or "main")
            return RemoteRevision(repo_id, folder.name)
        with self._session(repo_id, revision):
            info = self._api().model_info(repo_id, revision=revision, files_metadata=True)
        if not info.sha:
            raise HubError(f"the hub did not return a commit id for '{repo_id}'; is {self.endpoint} a hub endpoint?")
        lfs = {s.rfilename: s.lfs.sha256 for s in (info.siblings or []) if s.lfs is not None}
        return RemoteRevision(repo_id, info.sha, lfs, tuple(s.rfilename for s in info.siblings or []))

    def download(self, repo_id: str, revision: str) -> Path:
        """Download (or find in the cache) an adapter's files at ``revision``; returns the folder.

        Only ``adapter_config.json``, ``adapter_model.safetensors`` and ``README.md`` are fetched: a
        pickled ``adapter_model.bin`` is never downloaded, let alone loaded.
        """
        from huggingface_hub import snapshot_download

        with self._session(repo_id, revision):
            path = snapshot_download(
                repo_id,
                revision=revision,
                endpoint=self.endpoint,
                token=self.token,
                cache_dir=self.cache_dir,
                local_files_only=self.offline,
                allow_patterns=[CONFIG_NAME, WEIGHTS_NAME, README_NAME],
            )
        folder = Path(path)
        if not (folder / WEIGHTS_NAME).is_file():
            raise HubError(
                f"'{repo_id}' has no {WEIGHTS_NAME}; adapterhub imports safetensors weights only and never "
                "loads pickled adapter_model.bin files — convert the adapter to safetensors and push it again"
            )
        if not (folder / CONFIG_NAME).is_file():
            raise HubError(f"'{repo_id}' has no {CONFIG_NAME}; is it a PEFT adapter repo?")
        return folder


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()
