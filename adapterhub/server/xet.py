"""The Xet upload routes: how the default ``huggingface_hub`` client (with ``hf_xet``) sends large files.

For a file that preupload answers ``lfs`` for, ``huggingface_hub`` 2.x with ``hf_xet`` installed
(the default) never calls the LFS batch API; it asks for a Xet write token and talks to the "CAS"
service the token names. This server is that service too (formats in ``hubformat.xet``):

- ``GET  /api/models/{ns}/{name}/xet-write-token/{rev}``  write access to the repo required; the
  answer (headers ``X-Xet-Cas-Url``/``-Access-Token``/``-Token-Expiration``, and the same as JSON)
  names ``{base}/xet/{generation}`` as the CAS and carries a short-lived token signed with the
  home's key (the generation keeps a client's shard cache from naming xorbs this home no longer
  has: see ``hubformat.xet_store``);
- ``GET  /xet/{generation}/v1/chunks/default-merkledb/{hash}``  global deduplication: always 404
  (nothing to share), so the client uploads every xorb itself;
- ``POST /xet/{generation}/v1/xorbs/default/{hash}``  one xorb (<= 64 MiB), kept only if its
  chunks hash to its name;
- ``POST /xet/{generation}/v1/shards``  the manifest: each file it lists is rebuilt from the xorbs
  into the received-objects folder under its sha256, kept only if the bytes have that sha256.

The commit that follows names each file by sha256 in an ``lfsFile`` line, and takes it from the
received objects exactly as after an LFS basic-transfer upload (``lfs.lfs_source``).

The CAS token: the client sends it (not the hub token) as ``Authorization: Bearer`` to the CAS
routes. It names the repo and an expiry and is an HMAC with the per-home key, so every worker
accepts it; only someone with write access to that repo gets one.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from adapterhub.errors import AuthError, InvalidParameterError, UploadTooLargeError
from adapterhub.hubformat.xet import MAX_SHARD_BYTES, MAX_XORB_BYTES, hash_from_hex, parse_shard
from adapterhub.hubformat.xet_store import GENERATION, XetXorbs
from adapterhub.server.auth import bearer, hub_of, require_write
from adapterhub.server.bodylimit import allow_body
from adapterhub.server.lfs import lfs_objects, share_received, url_key

__all__ = ["router"]

router = APIRouter(tags=["hub Xet uploads (huggingface_hub with hf_xet)"])

XORB_TTL_SECONDS = 3600  # xorbs untouched this long are dropped (their files were rebuilt long ago)
TOKEN_TTL_SECONDS = 3600  # the client asks for a new one through the same route when it expires
_PARSING_AT_ONCE = 2  # xorbs received and checked at once: each is held whole (<= 64 MiB) meanwhile


def _xorbs(request: Request) -> XetXorbs:
    return XetXorbs(hub_of(request).settings.home / "uploads" / "xet")


def _signature(key: bytes, repo_id: str, expires: int) -> str:
    return hmac.new(key, f"xet-write\n{repo_id}\n{expires}".encode(), hashlib.sha256).hexdigest()


def _issue_token(request: Request, repo_id: str) -> dict[str, Any]:
    require_write(request, repo_id)  # a missing or hidden repo: 404; no right to write it: 403
    expires = int(time.time()) + TOKEN_TTL_SECONDS
    repo = base64.urlsafe_b64encode(repo_id.encode()).decode().rstrip("=")
    token = f"{repo}.{expires}.{_signature(url_key(request), repo_id, expires)}"
    cas = f"{str(request.base_url).rstrip('/')}/xet/{_xorbs(request).generation()}"
    return {"casUrl": cas, "accessToken": token, "exp": expires}


@router.get("/api/models/{namespace}/{name}/xet-write-token/{revision}")
async def write_token(namespace: str, name: str, revision: str, request: Request) -> JSONResponse:
    """A Xet write token for one repo (``huggingface_hub`` reads the headers, ``hf_xet`` the JSON)."""
    info = await run_in_threadpool(_issue_token, request, f"{namespace}/{name}")
    headers = {
        "X-Xet-Cas-Url": info["casUrl"],
        "X-Xet-Access-Token": info["accessToken"],
        "X-Xet-Token-Expiration": str(info["exp"]),
    }
    return JSONResponse(info, headers=headers)


def _check_cas_token(request: Request, generation: str) -> str:
    """The repo a CAS request's token was issued for.

    Raises:
        InvalidParameterError: ``generation`` is not one this server could have named.
        AuthError: no token, a forged, altered or expired one (401: the client asks for a new one).
    """
    if not GENERATION.fullmatch(generation):
        raise InvalidParameterError("this is not a Xet storage URL this server hands out")
    token = bearer(request) or ""
    repo, _, rest = token.partition(".")
    expires, _, sig = rest.partition(".")
    try:
        repo_id = base64.urlsafe_b64decode(repo + "=" * (-len(repo) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        repo_id = ""
    if not (repo_id and expires.isdigit() and sig):
        raise AuthError("the Xet storage routes need the token from /api/models/{repo}/xet-write-token")
    expected = _signature(url_key(request), repo_id, int(expires))
    if not hmac.compare_digest(sig, expected):
        raise AuthError("this Xet token's signature is not valid")
    if int(expires) < time.time():
        raise AuthError("this Xet token has expired; ask for a new one")
    return repo_id


async def _body(request: Request, limit: int) -> bytes:
    allow_body(request, limit)  # 413 past it, while the bytes arrive
    chunks = [chunk async for chunk in request.stream()]
    return b"".join(chunks)


@router.get("/xet/{generation}/v1/chunks/{prefix}/{chunk}")
async def chunk_dedup(generation: str, prefix: str, chunk: str, request: Request) -> JSONResponse:
    """Global deduplication: this hub shares no chunks between uploads, so never a match."""
    await run_in_threadpool(_check_cas_token, request, generation)
    hash_from_hex(chunk)
    return JSONResponse({"error": "chunk not tracked for deduplication"}, status_code=404)


def _gate(request: Request) -> asyncio.Semaphore:
    gate = getattr(request.app.state, "xet_gate", None)
    if gate is None:
        gate = request.app.state.xet_gate = asyncio.Semaphore(_PARSING_AT_ONCE)
    return gate


@router.post("/xet/{generation}/v1/xorbs/{prefix}/{xorb}")
async def upload_xorb(generation: str, prefix: str, xorb: str, request: Request) -> JSONResponse:
    """One xorb; 400 unless its chunks hash to its name (then nothing is kept)."""
    await run_in_threadpool(_check_cas_token, request, generation)
    if prefix != "default":
        raise InvalidParameterError("xorbs are uploaded under the prefix 'default'")
    raw = hash_from_hex(xorb)
    async with _gate(request):  # before the body is read: at most a few xorbs in memory at once
        body = await _body(request, MAX_XORB_BYTES)
        inserted = await run_in_threadpool(_xorbs(request).receive, raw, body)
    return JSONResponse({"was_inserted": inserted})


def _register_shard(request: Request, body: bytes) -> int:
    files = parse_shard(body)
    store, objects = _xorbs(request), lfs_objects(request)
    limit = request.app.state.max_upload_bytes
    if sum(f.size for f in files) > limit * 4:
        raise UploadTooLargeError("this shard lists more bytes than four commits may carry (the upload limit)")
    new = [store.rebuild(f, objects, max_bytes=limit) for f in files]
    for f in files:
        share_received(request, f.sha256)  # any replica can take the commit
    store.remove_stale(grace_seconds=XORB_TTL_SECONDS)  # their files are rebuilt: xorbs are not kept long
    return 1 if any(new) else 0


@router.post("/xet/{generation}/v1/shards")
async def upload_shard(generation: str, request: Request) -> JSONResponse:
    """The manifest of an upload: every file it lists is rebuilt and checked against its sha256."""
    await run_in_threadpool(_check_cas_token, request, generation)
    body = await _body(request, MAX_SHARD_BYTES)
    result = await run_in_threadpool(_register_shard, request, body)
    return JSONResponse({"result": result})
