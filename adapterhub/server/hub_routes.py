"""The hub routes ``huggingface_hub`` (2.x) and PEFT call, answered from the catalog and blob store.

Each route was checked against what the installed client sends (``hf_api.py``: ``create_repo``,
``model_info``/``repo_info``, ``list_repo_tree``, ``preupload_lfs_files``/``create_commit``;
``file_download.py``: ``get_hf_file_metadata``/``hf_hub_download``; ``_commit_api.py``) and is
exercised by the tests with the real client on loopback:

- ``POST /api/repos/create``                                  create a repo (409 + url if it exists)
- ``GET  /api/models/{ns}/{name}[/revision/{rev}]``           model info: ``sha``, ``siblings``
- ``GET  /api/models/{ns}/{name}/tree/{rev}[/{path}]``         file listing (``recursive`` honoured)
- ``GET|HEAD /{ns}/{name}/resolve/{rev}/{path}``               file bytes with ``X-Repo-Commit``,
  ``ETag`` (sha256 for LFS-like files, git oid otherwise, quoted), ``Content-Length``, ranges;
  with blobs in a bucket, LFS-like files answer 302 to a presigned URL (``X-Linked-Etag``/``-Size``)
- ``POST /api/models/{ns}/{name}/preupload/{rev}``             ``uploadMode``: ``regular``, or ``lfs``
  for large files and weights where LFS is on (the LFS routes are in ``lfs.py``)
- ``POST /api/models/{ns}/{name}/commit/{rev}``                NDJSON commit, streamed to staging
  (``file`` inline, ``lfsFile`` naming an uploaded object, deletions)
- ``POST /api/validate-yaml``                                  model card front matter check

Catalog entries are repos ``namespace/name``; every catalog revision is an immutable commit (its
40-hex id); ``main`` is the head. Blobs are streamed from the blob store, never read whole.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime, timezone
from typing import Any

import anyio
from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse

from adapterhub.errors import (
    BlobNotFoundError,
    EntryNotFoundError,
    HubRevisionNotFoundError,
    InvalidAdapterError,
    InvalidParameterError,
    UploadTooLargeError,
)
from adapterhub.hubformat import (
    CommitBodyParser,
    HubFile,
    UploadStaging,
    check_allowed_file,
    check_repo_path,
    validate_card,
)
from adapterhub.server.auth import hub_of, require_read, require_write
from adapterhub.server.bodylimit import allow_body
from adapterhub.server.jsonbody import json_object as _json_object
from adapterhub.server.lfs import lfs_objects, lfs_source, upload_mode

__all__ = ["router"]

router = APIRouter(tags=["hub (huggingface_hub protocol)"])

_HEAD_ALIASES = ("main", "HEAD", "head")
_FEED_BATCH = 4 << 20  # hand the parser this much at a time (it runs in a worker thread)


class _BlobResponse(FileResponse):
    chunk_size = 1 << 20  # 1 MiB reads: fewer thread hops than Starlette's 64 KiB for 100 MB blobs


def _iso(value: datetime) -> str:
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


# -- repos ---------------------------------------------------------------------------------------


@router.post("/api/repos/create")
async def create_repo(request: Request) -> JSONResponse:
    """Create a model repo ``organization/name`` (``huggingface_hub.HfApi.create_repo``)."""
    await run_in_threadpool(require_write, request, None)  # 401/403 before the body is read
    payload = await _json_object(request)
    return await run_in_threadpool(_create_repo, request, payload)


def _create_repo(request: Request, payload: dict[str, Any]) -> JSONResponse:
    repo_type = payload.get("type") or "model"
    if repo_type != "model":
        raise InvalidParameterError(f"this hub holds model repos (LoRA adapters) only, not {repo_type!r} repos")
    namespace, name = payload.get("organization"), payload.get("name")
    if not namespace or not isinstance(name, str):
        raise InvalidParameterError("give the repo id as 'namespace/name' (this hub has no per-user namespace)")
    repo_id = f"{namespace}/{name}"
    require_write(request, repo_id, must_exist=False)
    private = payload.get("visibility") == "private" or bool(payload.get("private"))
    created = hub_of(request).hub_create_repo(repo_id, private=private)
    url = f"{_base_url(request)}/{repo_id}"
    if not created:
        return JSONResponse(
            {"error": f"repo '{repo_id}' already exists", "url": url},
            status_code=409,
            headers={"X-Error-Message": "You already created this model repo"},
        )
    return JSONResponse({"url": url, "name": repo_id, "id": repo_id})


def _model_info(request: Request, repo_id: str, revision: str | None) -> dict[str, Any]:
    require_read(request, repo_id)
    hub = hub_of(request)
    namespace = repo_id.split("/", 1)[0]
    try:
        snap = hub.hub_snapshot(repo_id, revision or "main")
    except HubRevisionNotFoundError:
        if revision is not None:
            raise
        # An empty repo (created, nothing committed yet): the hub answers with no commit and no files.
        return {"id": repo_id, "modelId": repo_id, "author": namespace, "sha": None, "siblings": [], "tags": []}
    record = hub.get(repo_id)
    return {
        "_id": snap.revision,
        "id": repo_id,
        "modelId": repo_id,
        "author": namespace,
        "sha": snap.revision,
        "lastModified": _iso(snap.created),
        "createdAt": _iso(record.created) if record.created else _iso(snap.created),
        "private": snap.private,
        "gated": False,
        "disabled": False,
        "downloads": 0,
        "likes": 0,
        "library_name": "peft",
        "tags": ["peft", "lora", *record.tags],
        "siblings": [f.sibling() for f in snap.files.values()],
        "cardData": {"library_name": "peft", "base_model": record.base_model, "tags": list(record.tags)},
    }


@router.get("/api/models/{namespace}/{name}")
def model_info(namespace: str, name: str, request: Request) -> dict[str, Any]:
    """Model info of the head (``HfApi.model_info``/``repo_info``): ``sha`` and ``siblings``."""
    return _model_info(request, f"{namespace}/{name}", None)


@router.get("/api/models/{namespace}/{name}/revision/{revision:path}")
def model_info_revision(namespace: str, name: str, revision: str, request: Request) -> dict[str, Any]:
    """Model info at a revision (``main``, a commit id or a unique prefix of one)."""
    return _model_info(request, f"{namespace}/{name}", revision)


def _tree(request: Request, repo_id: str, revision: str, path: str, recursive: bool) -> list[dict[str, Any]]:
    require_read(request, repo_id)
    snap = hub_of(request).hub_snapshot(repo_id, revision)
    prefix = path.strip("/")
    prefix = prefix + "/" if prefix else ""
    if prefix and not any(p.startswith(prefix) for p in snap.files):
        raise EntryNotFoundError(repo_id, snap.revision, path)
    entries: list[dict[str, Any]] = []
    folders: set[str] = set()
    for p, f in snap.files.items():
        if not p.startswith(prefix):
            continue
        rest = p[len(prefix) :]
        parts = rest.split("/")
        for depth in range(1, len(parts)):
            if depth > 1 and not recursive:
                break
            folders.add(prefix + "/".join(parts[:depth]))
        if recursive or len(parts) == 1:
            entries.append(f.tree_entry())
    for folder in sorted(folders):
        entries.append({"type": "directory", "oid": "0" * 40, "size": 0, "path": folder})
    return sorted(entries, key=lambda e: e["path"])


@router.get("/api/models/{namespace}/{name}/tree/{revision}")
def tree_root(namespace: str, name: str, revision: str, request: Request, recursive: bool = False) -> list[dict[str, Any]]:
    """Files of a revision (``HfApi.list_repo_tree``); one page, no ``Link`` header."""
    return _tree(request, f"{namespace}/{name}", revision, "", recursive)


@router.get("/api/models/{namespace}/{name}/tree/{revision}/{path:path}")
def tree_path(
    namespace: str, name: str, revision: str, path: str, request: Request, recursive: bool = False
) -> list[dict[str, Any]]:
    """Files under a folder of a revision."""
    return _tree(request, f"{namespace}/{name}", revision, path, recursive)


# -- download ------------------------------------------------------------------------------------


def _parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """A single ``bytes=a-b`` range as (start, end exclusive); None for none or unsupported ones."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first, _, last = header[6:].strip().partition("-")
    try:
        if first == "":
            n = int(last)
            return (max(size - n, 0), size) if n > 0 else None
        start = int(first)
        end = int(last) + 1 if last else size
    except ValueError:
        return None
    if start >= size or end <= start:
        return None
    return start, min(end, size)


def _bytes_response(content: bytes, headers: dict[str, str], range_header: str | None) -> Response:
    window = _parse_range(range_header, len(content))
    if window is None:
        return Response(content, headers=headers, media_type="application/octet-stream")
    start, end = window
    headers = {**headers, "Content-Range": f"bytes {start}-{end - 1}/{len(content)}"}
    return Response(content[start:end], status_code=206, headers=headers, media_type="application/octet-stream")


@router.get("/{namespace}/{name}/resolve/{revision}/{path:path}", operation_id="resolve_file")
@router.head("/{namespace}/{name}/resolve/{revision}/{path:path}", operation_id="resolve_file_metadata")
def resolve(namespace: str, name: str, revision: str, path: str, request: Request) -> Response:
    """A file of a revision (``hf_hub_download``; HEAD for ``get_hf_file_metadata``)."""
    repo_id = f"{namespace}/{name}"
    require_read(request, repo_id)
    snap = hub_of(request).hub_snapshot(repo_id, revision)
    f: HubFile | None = snap.files.get(path)
    if f is None:
        raise EntryNotFoundError(repo_id, snap.revision, path)
    headers = {"X-Repo-Commit": snap.revision, "ETag": f'"{f.etag}"', "Accept-Ranges": "bytes"}
    if f.blob_path is None:
        assert f.content is not None
        return _bytes_response(f.content, headers, request.headers.get("range"))
    blobs = hub_of(request).blobs
    if blobs.remote:
        if f.lfs and (url := blobs.download_url(f.sha256)) is not None:
            return _redirect_to_bucket(url, f, headers)
        path = blobs.local_path(f.sha256)  # a small file (or a backend that cannot sign): served from the cache
    else:
        path = f.blob_path
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise BlobNotFoundError(f.sha256, path) from None
    return _BlobResponse(path, headers=headers, media_type="application/octet-stream", stat_result=stat)


def _redirect_to_bucket(url: str, f: HubFile, headers: dict[str, str]) -> Response:
    """A 302 to a presigned URL of the bucket, as the Hugging Face hub redirects LFS downloads.

    Why: a replica must not proxy gigabytes it does not need to touch. ``huggingface_hub`` reads
    the file's metadata from this answer (``X-Linked-Etag``, ``X-Linked-Size``, the commit) and
    then fetches ``Location`` without its token (another host), ranges included.
    """
    linked = {"X-Linked-Etag": f'"{f.sha256}"', "X-Linked-Size": str(f.size), "Location": url}
    return Response(status_code=302, headers={**headers, **linked})


# -- upload --------------------------------------------------------------------------------------


def _check_commit_target(request: Request, repo_id: str, revision: str) -> None:
    require_write(request, repo_id)  # a missing or hidden repo: 404; no right to write it: 403
    if revision not in _HEAD_ALIASES:
        raise HubRevisionNotFoundError(repo_id, revision, " (this hub commits to 'main' only)")
    if request.query_params.get("create_pr"):
        raise InvalidParameterError("pull requests are not supported by this hub; commit to 'main'")


@router.post("/api/models/{namespace}/{name}/preupload/{revision}")
async def preupload(namespace: str, name: str, revision: str, request: Request) -> dict[str, Any]:
    """Tell the client how to upload each file: inline (``regular``), in the commit itself, or
    through the LFS batch API first (``lfs``: large files and weights, where LFS is on; see ``lfs.py``).

    Paths, forbidden files (by name and by the sample's first bytes) and the size limit are checked
    here already, so a bad upload fails before its bytes are sent.
    """
    await run_in_threadpool(_check_commit_target, request, f"{namespace}/{name}", revision)
    payload = await _json_object(request)
    files = payload.get("files")
    if not isinstance(files, list) or not all(isinstance(f, dict) for f in files):
        raise InvalidParameterError("preupload expects {'files': [{'path', 'sample', 'size'}, ...]}")
    sizes = []
    for f in files:
        path = check_repo_path(f.get("path"))
        try:
            sample = base64.b64decode(f.get("sample") or "", validate=True)
        except (binascii.Error, ValueError):
            sample = b""
        check_allowed_file(path, sample[:16])
        size = f.get("size")
        sizes.append(size if isinstance(size, int) and size >= 0 else 0)
    UploadStaging.check_sizes(sizes, max_bytes=request.app.state.max_upload_bytes)
    modes = [upload_mode(request, f["path"], size) for f, size in zip(files, sizes)]
    return {
        "files": [{"path": f["path"], "uploadMode": mode, "shouldIgnore": False} for f, mode in zip(files, modes)],
        "commitOid": None,
    }


@router.post("/api/models/{namespace}/{name}/commit/{revision}")
async def commit(namespace: str, name: str, revision: str, request: Request) -> dict[str, Any]:
    """Apply an NDJSON commit (``HfApi.create_commit``): a header line, then file operations.

    The body is parsed as it arrives: file contents are base64-decoded straight into a private
    staging folder, so memory stays small whatever the file size. The commit is validated as a
    whole (a valid PEFT LoRA adapter, safetensors only, safe paths, within the size limit) and only
    then stored; a refused commit changes neither the catalog nor the blob store.
    """
    repo_id = f"{namespace}/{name}"
    hub = hub_of(request)
    await run_in_threadpool(_check_commit_target, request, repo_id, revision)
    limit: int = request.app.state.max_upload_bytes
    body_limit = limit * 4 // 3 + (1 << 20)  # base64 inflates by 4/3; plus JSON around it
    allow_body(request, body_limit)  # this route streams: it takes more than BodyLimitMiddleware's default
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > body_limit:
        raise UploadTooLargeError(
            f"the commit body is {declared} bytes, over this server's limit of {limit} bytes of files per commit; "
            "upload fewer or smaller files (or raise the limit with `adapterhub serve --max-upload-mb`)"
        )
    staging = await run_in_threadpool(hub.hub_staging, max_bytes=limit)
    try:
        parser = CommitBodyParser(staging, lfs_source=lfs_source(request))
        received = 0
        buffer = bytearray()
        async for chunk in request.stream():
            received += len(chunk)
            if received > body_limit:
                raise UploadTooLargeError(f"the commit body is larger than this server's limit ({limit} bytes of files)")
            buffer += chunk
            if len(buffer) >= _FEED_BATCH:
                await run_in_threadpool(parser.feed, bytes(buffer))
                buffer.clear()
        if declared is not None and declared.isdigit() and received != int(declared):
            raise InvalidAdapterError(f"the commit body was truncated: {received} of {declared} bytes arrived")
        if buffer:
            await run_in_threadpool(parser.feed, bytes(buffer))
        parser.close()
        header = parser.header or {}
        message = header.get("summary") if isinstance(header.get("summary"), str) else ""
        parent = header.get("parentCommit") if isinstance(header.get("parentCommit"), str) else None
        sha = await run_in_threadpool(
            hub.hub_commit, repo_id, staging, revision=revision, message=message, parent_commit=parent
        )
        objects = lfs_objects(request)
        for oid in parser.lfs_oids:  # kept as uploaded in the blob store: a retry finds them there
            if hub.blobs.has(oid):  # (otherwise gc removes them after its grace period)
                await run_in_threadpool(objects.remove, oid)
    finally:
        with anyio.CancelScope(shield=True):  # a client gone mid-body must not leave its staging folder
            await run_in_threadpool(staging.close)
    return {"commitUrl": f"{_base_url(request)}/{repo_id}/commit/{sha}", "commitOid": sha, "pullRequestUrl": None}


@router.post("/api/validate-yaml")
async def validate_yaml(request: Request) -> JSONResponse:
    """Check a model card's front matter before a commit (``HfApi._validate_yaml``)."""
    await run_in_threadpool(require_read, request)
    payload = await _json_object(request)
    content = payload.get("content")
    if not isinstance(content, str):
        raise InvalidParameterError("validate-yaml expects {'content': '<README.md text>'}")
    errors = await run_in_threadpool(validate_card, content)  # YAML parsing is CPU work: off the event loop
    if errors:
        return JSONResponse(
            {"error": "; ".join(errors), "errors": [{"message": e} for e in errors], "warnings": []}, status_code=400
        )
    return JSONResponse({"errors": [], "warnings": []})
