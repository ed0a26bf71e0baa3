"""The LFS routes ``huggingface_hub`` uses for large files (the git-lfs batch API, basic transfer).

When preupload answers ``uploadMode: "lfs"`` for a file, the client (without ``hf_xet``, see
below) uploads it in three steps before the commit:

- ``POST /{ns}/{name}.git/info/lfs/objects/batch``  which objects to send, and where: for each one
  this server does not hold yet, an ``upload`` action (a signed ``PUT`` URL back to this server)
  and a ``verify`` action; objects already received or in the blob store get no actions;
- ``PUT  /api/lfs/upload/{ns}/{name}/{oid}?size&exp&sig``  the bytes, streamed to
  ``<home>/uploads/lfs`` while hashed; kept only if sha256 and size match the oid;
- ``POST /api/lfs/verify/{ns}/{name}``  the client's check that the object arrived.

The commit then names the object in an ``lfsFile`` line (see ``hubformat.ndjson``).

Why a signed URL: the client sends the ``PUT`` without its token (it is meant for a storage
bucket), so the URL itself carries the right to write that one object of that repo, for a short
while. Only a caller with write access to the repo gets one (at the batch). The key is one per
home, so every worker process accepts the URLs another one signed.

``huggingface_hub`` 2.x uploads ``lfs`` files through Xet storage instead whenever ``hf_xet`` is
installed (a dependency it installs by default), without asking the server: ``xet.py`` serves that
path, and leaves the received files in the same place as this one, so the commit is the same.
Which files are ``lfs``: every ``*.safetensors`` and anything over the threshold
(``serve --lfs-threshold-mb``, 10 MiB by default as on the Hugging Face hub; 0 sends every file
inline in the commit, base64 in the NDJSON, which every client handles).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from pathlib import Path
from typing import Any

import anyio
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from adapterhub.errors import InvalidParameterError, PermissionDeniedError, UploadTooLargeError
from adapterhub.hubformat import UploadStaging
from adapterhub.hubformat.lfs_objects import LfsObjects, check_oid
from adapterhub.server.auth import hub_of, require_write
from adapterhub.server.bodylimit import allow_body
from adapterhub.server.jsonbody import json_object as _json_object

__all__ = ["lfs_objects", "lfs_source", "lfs_threshold", "router", "threshold_from_mb"]

router = APIRouter(tags=["hub LFS (huggingface_hub protocol)"])

URL_TTL_SECONDS = 3600  # an upload URL is good for an hour (a 10 GB file at 3 MB/s)
_LFS_TYPE = "application/vnd.git-lfs+json"
_FEED_BATCH = 4 << 20  # write this much at a time (in a worker thread)


def threshold_from_mb(mb: float) -> int | None:
    """``serve --lfs-threshold-mb`` in bytes; 0 (or less) turns LFS off: every file goes inline."""
    return int(mb * (1 << 20)) if mb > 0 else None


def lfs_threshold(request: Request) -> int | None:
    """Files at least this large (and every ``*.safetensors``) go through LFS; None: LFS is off."""
    value = request.app.state.lfs_threshold
    return None if value is None else int(value)


def upload_mode(request: Request, path: str, size: int) -> str:
    """``lfs`` or ``regular`` for one file of a preupload (empty files are always regular)."""
    threshold = lfs_threshold(request)
    if threshold is None or size <= 0:
        return "regular"
    return "lfs" if path.lower().endswith(".safetensors") or size >= threshold else "regular"


def lfs_objects(request: Request) -> LfsObjects:
    return LfsObjects(hub_of(request).settings.home / "uploads" / "lfs")


def url_key(request: Request) -> bytes:
    """The key that signs upload URLs: ``ADAPTERHUB_URL_SECRET`` when set (every replica of a team
    deployment accepts the URLs another one signed, whichever a load balancer picks), else one
    key per home (every worker process of one ``serve`` shares it)."""
    secret = hub_of(request).settings.url_secret
    if secret:
        return hashlib.sha256(b"adapterhub-url-key\0" + secret.encode()).digest()
    return lfs_objects(request).url_key()


def share_received(request: Request, oid: str) -> None:
    """With blobs in a bucket, store a received object there at once (it is verified already).

    Why: behind a load balancer the commit naming this object may reach another replica, which
    finds it in the shared bucket (``lfs_source``). An object never committed is removed by
    ``gc`` after the grace period, like any unreferenced blob.
    """
    hub, objects = hub_of(request), lfs_objects(request)
    if hub.blobs.remote and objects.has(oid):
        hub.blobs.put_file(objects.path(oid), oid)


def lfs_source(request: Request) -> Any:
    """For the commit: where the object with a sha256 is (received here, or a stored blob)."""
    objects, blobs = lfs_objects(request), hub_of(request).blobs

    def find(oid: str) -> Path | None:
        if objects.has(oid):
            return objects.path(oid)
        return blobs.local_path(oid) if blobs.has(oid) else None

    return find


def _signature(key: bytes, repo_id: str, oid: str, size: int, expires: int) -> str:
    message = f"{repo_id}\n{oid}\n{size}\n{expires}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def _object_answer(request: Request, repo_id: str, obj: Any, key: bytes) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise InvalidParameterError("each LFS object must be {'oid', 'size'}")
    oid, size = check_oid(obj.get("oid")), obj.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidParameterError(f"LFS object {oid}: 'size' must be a non-negative integer")
    blobs = hub_of(request).blobs
    if lfs_objects(request).has(oid, size) or (blobs.has(oid) and blobs.size(oid) == size):
        return {"oid": oid, "size": size}  # nothing to send
    base = str(request.base_url).rstrip("/")
    expires = int(time.time()) + URL_TTL_SECONDS
    sig = _signature(key, repo_id, oid, size, expires)
    return {
        "oid": oid,
        "size": size,
        "authenticated": True,
        "actions": {
            "upload": {
                "href": f"{base}/api/lfs/upload/{repo_id}/{oid}?size={size}&exp={expires}&sig={sig}",
                "expires_in": URL_TTL_SECONDS,
            },
            "verify": {"href": f"{base}/api/lfs/verify/{repo_id}", "expires_in": URL_TTL_SECONDS},
        },
    }


def _batch(request: Request, repo_id: str, payload: dict[str, Any]) -> dict[str, Any]:
    if payload.get("operation") != "upload":
        raise InvalidParameterError("this hub's LFS batch API takes uploads only; download files with /resolve/")
    transfers = payload.get("transfers") or ["basic"]
    if not isinstance(transfers, list) or "basic" not in transfers:
        raise InvalidParameterError("this hub's LFS batch API offers the 'basic' transfer only")
    if payload.get("hash_algo", "sha256") != "sha256":
        raise InvalidParameterError("this hub's LFS objects are sha256 only")
    objects = payload.get("objects")
    if not isinstance(objects, list) or len(objects) > 1000:
        raise InvalidParameterError("the LFS batch expects 'objects': a list of at most 1000 {'oid', 'size'}")
    sizes = [o.get("size") for o in objects if isinstance(o, dict) and isinstance(o.get("size"), int)]
    UploadStaging.check_sizes(sizes, max_bytes=request.app.state.max_upload_bytes)
    key = url_key(request)
    return {"transfer": "basic", "hash_algo": "sha256", "objects": [_object_answer(request, repo_id, o, key) for o in objects]}


@router.post("/{namespace}/{name}.git/info/lfs/objects/batch")
async def batch(namespace: str, name: str, request: Request) -> JSONResponse:
    """Which objects to upload, and where (git-lfs batch API, basic transfer); write access only."""
    repo_id = f"{namespace}/{name}"
    await run_in_threadpool(require_write, request, repo_id)  # 401/403/404 before the body is read
    payload = await _json_object(request)
    answer = await run_in_threadpool(_batch, request, repo_id, payload)
    return JSONResponse(answer, media_type=_LFS_TYPE)


def _check_signature(request: Request, repo_id: str, oid: str) -> int:
    """The object size the URL grants; refuses a missing, forged, altered or expired signature."""
    q = request.query_params
    size, expires, sig = q.get("size", ""), q.get("exp", ""), q.get("sig", "")
    if not (size.isdigit() and expires.isdigit() and sig):
        raise PermissionDeniedError("this upload URL is not signed; ask the LFS batch API for one")
    key = url_key(request)
    if not hmac.compare_digest(sig, _signature(key, repo_id, oid, int(size), int(expires))):
        raise PermissionDeniedError("this upload URL's signature is not valid for this repo and object")
    if int(expires) < time.time():
        raise PermissionDeniedError("this upload URL has expired; ask the LFS batch API for a new one")
    return int(size)


@router.put("/api/lfs/upload/{namespace}/{name}/{oid}")
async def upload(namespace: str, name: str, oid: str, request: Request) -> JSONResponse:
    """Receive one object's bytes, streamed to disk while hashed (never held in memory).

    Kept under its oid only if the sha256 and the size match; otherwise removed, and a 4xx.
    """
    repo_id = f"{namespace}/{name}"
    check_oid(oid)
    size = await run_in_threadpool(_check_signature, request, repo_id, oid)
    allow_body(request, size)  # exactly the announced size, no more (413 past it)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) != size:
        code = UploadTooLargeError if int(declared) > size else InvalidParameterError
        raise code(f"the upload is {declared} bytes; this URL is for an object of {size} bytes")
    objects = lfs_objects(request)
    if objects.has(oid, size):  # a retry, or a concurrent upload of the same bytes
        async for _ in request.stream():
            pass
        return JSONResponse({}, media_type=_LFS_TYPE)
    receiver = await run_in_threadpool(objects.receiver, oid, size)
    try:
        buffer = bytearray()
        async for chunk in request.stream():
            buffer += chunk
            if len(buffer) >= _FEED_BATCH:
                await run_in_threadpool(receiver.write, bytes(buffer))
                buffer.clear()
        if buffer:
            await run_in_threadpool(receiver.write, bytes(buffer))
        await run_in_threadpool(receiver.finish)
    finally:
        with anyio.CancelScope(shield=True):  # a client gone mid-body must not leave a partial object
            await run_in_threadpool(receiver.discard)
    await run_in_threadpool(share_received, request, oid)
    return JSONResponse({}, media_type=_LFS_TYPE)


def _verify(request: Request, repo_id: str, payload: dict[str, Any]) -> None:
    oid, size = check_oid(payload.get("oid")), payload.get("size")
    blobs = hub_of(request).blobs
    if not (lfs_objects(request).has(oid, size if isinstance(size, int) else -1) or blobs.has(oid)):
        raise InvalidParameterError(f"LFS object {oid} ({size} bytes) was not received; upload it again")


@router.post("/api/lfs/verify/{namespace}/{name}")
async def verify(namespace: str, name: str, request: Request) -> JSONResponse:
    """The client's check after an upload that the object is here, whole."""
    repo_id = f"{namespace}/{name}"
    await run_in_threadpool(require_write, request, repo_id)
    payload = await _json_object(request)
    await run_in_threadpool(_verify, request, repo_id, payload)
    return JSONResponse({}, media_type=_LFS_TYPE)
