"""Attacks on the Xet upload routes (issue 9, item 12), replayed on a live server.

Xorbs and shards are built here by hand, byte by byte as the Xet spec lays them out (the server's
own hash function names the valid ones; ``tests/server/test_xet_upload.py`` checks that function
against ``hf_xet``). Each attack: the status code, that no xorb, received object, catalog row or
blob was kept, and that no answer is a 500.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
import time

import httpx
import lz4.frame
import pytest
from huggingface_hub import HfApi

from adapterhub.hubformat.xet import SHARD_TAG, chunk_hash, hash_hex, xorb_hash
from tests.helpers import store_state, write_random_adapter

REPO = "acme/xet-attacks"


def chunk_bytes(data: bytes, scheme: int = 0, *, payload: bytes | None = None, size: int | None = None) -> bytes:
    body = payload if payload is not None else (data if scheme == 0 else lz4.frame.compress(data))
    n = len(data) if size is None else size
    return bytes([0]) + len(body).to_bytes(3, "little") + bytes([scheme]) + n.to_bytes(3, "little") + body


def xorb_of(*chunks: bytes) -> tuple[str, bytes]:
    """A valid serialized xorb of ``chunks`` (stored, then LZ4), and its name."""
    body = b"".join(chunk_bytes(c, i % 2) for i, c in enumerate(chunks))
    return hash_hex(xorb_hash([(chunk_hash(c), len(c)) for c in chunks])), body


def shard_of(files: list[tuple[str, list[tuple[str, int, int, int]]]], *, metadata: bool = True) -> bytes:
    """A shard listing ``files``: (sha256 hex, [(xorb name, start, end, bytes)])."""

    def raw(name: str) -> bytes:  # the inverse of hash_hex
        return b"".join(bytes.fromhex(name[i : i + 16])[::-1] for i in range(0, 64, 16))

    out = SHARD_TAG + struct.pack("<QQ", 2, 0)
    for sha, terms in files:
        flags = 1 << 30 if metadata else 0
        out += os.urandom(32) + struct.pack("<II", flags, len(terms)) + bytes(8)
        for xorb, start, end, size in terms:
            out += raw(xorb) + struct.pack("<IIII", 0, size, start, end)
        if metadata:
            out += raw(sha) + bytes(16)
    return out + b"\xff" * 32 + bytes(16)


@pytest.fixture(scope="module")
def cas(live):
    HfApi(endpoint=live.url, token=live.token).create_repo(REPO, exist_ok=True)
    answer = httpx.get(f"{live.url}/api/models/{REPO}/xet-write-token/main",
                       headers={"Authorization": f"Bearer {live.token}"}, timeout=30)
    assert answer.status_code == 200, answer.text
    info = answer.json()
    assert answer.headers["X-Xet-Access-Token"] == info["accessToken"]
    return info["casUrl"], {"Authorization": f"Bearer {info['accessToken']}"}


def kept(home) -> tuple[object, list[str], list[str]]:
    xet, lfs = home / "uploads" / "xet", home / "uploads" / "lfs"
    names = (sorted(p.name for p in d.iterdir()) if d.is_dir() else [] for d in (xet, lfs))
    return (store_state(home), *names)


def test_write_token_needs_write_access_to_the_repo(live):
    url = f"{live.url}/api/models/{REPO}/xet-write-token/main"
    HfApi(endpoint=live.url, token=live.token).create_repo(REPO, exist_ok=True)
    assert httpx.get(url, timeout=30).status_code == 401
    assert httpx.get(url, headers={"Authorization": f"Bearer {live.read_token}"}, timeout=30).status_code == 403
    other = live.hub.create_token(name="xet-other", owner="other")["token"]
    assert httpx.get(url, headers={"Authorization": f"Bearer {other}"}, timeout=30).status_code == 403
    missing = f"{live.url}/api/models/acme/no-such-repo/xet-write-token/main"
    assert httpx.get(missing, headers={"Authorization": f"Bearer {live.token}"}, timeout=30).status_code == 404


def test_cas_routes_refuse_missing_forged_and_expired_tokens(live, cas):
    base, good = cas
    name, body = xorb_of(b"x" * 1000)
    token = good["Authorization"].split()[1]
    repo, expires, sig = token.split(".")
    forged = f"{repo}.{expires}.{'0' * len(sig)}"
    longer = f"{repo}.{int(expires) + 10**6}.{sig}"  # a later expiry without a new signature
    for headers in ({}, {"Authorization": f"Bearer {live.token}"}, {"Authorization": f"Bearer {forged}"},
                    {"Authorization": f"Bearer {longer}"}):
        for method, path, content in (("POST", f"/v1/xorbs/default/{name}", body), ("POST", "/v1/shards", b"x"),
                                      ("GET", f"/v1/chunks/default-merkledb/{name}", None)):
            r = httpx.request(method, base + path, content=content, headers=headers, timeout=30)
            assert r.status_code == 401, (headers, path, r.text)
    assert not (live.home / "uploads" / "xet" / name).exists()


def test_global_dedup_never_matches(cas):
    base, headers = cas
    r = httpx.get(f"{base}/v1/chunks/default-merkledb/{'ab' * 32}", headers=headers, timeout=30)
    assert r.status_code == 404
    assert httpx.get(f"{base}/v1/chunks/default-merkledb/{'zz' * 32}", headers=headers, timeout=30).status_code == 422


BAD_XORBS = {
    "wrong-name": lambda: ("cd" * 32, xorb_of(b"y" * 5000)[1], 422, "hash to"),
    "truncated": lambda: (xorb_of(b"z" * 5000)[0], xorb_of(b"z" * 5000)[1][:-10], 422, "malformed"),
    "unknown-compression": lambda: ("ab" * 32, chunk_bytes(b"q" * 100, 7, payload=b"q" * 100), 422, "scheme 7"),
    "chunk-over-128k": lambda: ("ab" * 32, chunk_bytes(b"q" * 10, size=200_000, payload=b"q" * 10), 422, "malformed"),
    "lz4-bomb": lambda: ("ab" * 32, chunk_bytes(b"", 1, payload=lz4.frame.compress(b"\0" * (64 << 20)), size=1000),
                         422, "malformed"),
    "lz4-more-than-header": lambda: ("ab" * 32, chunk_bytes(b"", 1, payload=lz4.frame.compress(b"a" * 5000), size=100),
                                     422, "more than"),
    "not-lz4": lambda: ("ab" * 32, chunk_bytes(b"", 1, payload=b"junk" * 10, size=40), 422, "LZ4"),
    "size-mismatch": lambda: ("ab" * 32, chunk_bytes(b"q" * 10, size=11, payload=b"q" * 10), 422, "header says"),
    "trailing-junk": lambda: (xorb_of(b"w" * 100)[0], xorb_of(b"w" * 100)[1] + b"\x07junk", 422, "neither"),
    "empty": lambda: ("ab" * 32, b"", 422, "at least one chunk"),
    "bad-name": lambda: ("AB" * 32, xorb_of(b"v")[1], 422, "64 lowercase hex"),
}


@pytest.mark.parametrize("case", list(BAD_XORBS))
def test_bad_xorb_is_refused_and_nothing_is_kept(live, cas, case):
    base, headers = cas
    name, body, status, needle = BAD_XORBS[case]()
    before = kept(live.home)
    r = httpx.post(f"{base}/v1/xorbs/default/{name}", content=body, headers=headers, timeout=60)
    assert r.status_code == status, r.text
    assert needle in r.json()["error"], r.text
    assert "/tmp" not in r.text and "Traceback" not in r.text
    assert kept(live.home) == before


def test_oversized_xorb_is_refused_while_it_arrives(live, cas):
    base, headers = cas
    r = httpx.post(f"{base}/v1/xorbs/default/{'ab' * 32}", content=b"\0" * ((64 << 20) + 1), headers=headers, timeout=60)
    assert r.status_code == 413
    assert httpx.get(f"{live.url}/v1/health", timeout=5).status_code == 200


def test_a_valid_xorb_is_kept_once(live, cas):
    base, headers = cas
    name, body = xorb_of(os.urandom(3000), os.urandom(70_000), b"\1" * 20_000)
    first = httpx.post(f"{base}/v1/xorbs/default/{name}", content=body, headers=headers, timeout=30)
    again = httpx.post(f"{base}/v1/xorbs/default/{name}", content=body, headers=headers, timeout=30)
    assert (first.json(), again.json()) == ({"was_inserted": True}, {"was_inserted": False})
    assert (live.home / "uploads" / "xet" / name).is_file()


def _stored_xorb(live, cas, *chunks: bytes) -> str:
    base, headers = cas
    name, body = xorb_of(*chunks)
    assert httpx.post(f"{base}/v1/xorbs/default/{name}", content=body, headers=headers, timeout=30).status_code == 200
    return name


def test_shard_rebuilds_a_file_and_a_commit_takes_it(live, cas, tmp_path):
    base, headers = cas
    a, b = b"first chunk " * 400, b"second " + os.urandom(9000)  # text first: no pickle-like first byte
    name = _stored_xorb(live, cas, a, b)
    sha = hashlib.sha256(a + b).hexdigest()
    r = httpx.post(f"{base}/v1/shards", content=shard_of([(sha, [(name, 0, 2, len(a + b))])]), headers=headers, timeout=30)
    assert r.status_code == 200 and r.json() == {"result": 1}, r.text
    assert (live.home / "uploads" / "lfs" / sha).read_bytes() == a + b
    folder = write_random_adapter(tmp_path / "a", seed=8)
    lines = [{"key": "header", "value": {"summary": "xet"}}]
    for path in ("adapter_config.json", "adapter_model.safetensors"):
        content = base64.b64encode((folder / path).read_bytes()).decode()
        lines.append({"key": "file", "value": {"path": path, "content": content, "encoding": "base64"}})
    lines.append({"key": "lfsFile", "value": {"path": "extra/data.dat", "algo": "sha256", "oid": sha, "size": len(a + b)}})
    commit = httpx.post(f"{live.url}/api/models/{REPO}/commit/main", content="\n".join(map(json.dumps, lines)) + "\n",
                        headers={"Authorization": f"Bearer {live.token}"}, timeout=30)
    assert commit.status_code == 200, commit.text
    served = httpx.get(f"{live.url}/{REPO}/resolve/main/extra/data.dat", timeout=30)
    assert served.content == a + b
    assert not (live.home / "uploads" / "lfs" / sha).exists()  # moved into the blob store


def _bad_shards(name: str, data: bytes) -> dict[str, tuple[bytes, int, str]]:
    sha = hashlib.sha256(data).hexdigest()
    n = len(data)
    return {
        "wrong-sha256": (shard_of([("00" * 32, [(name, 0, 1, n)])]), 422, "do not match"),
        "missing-xorb": (shard_of([(sha, [("ef" * 32, 0, 1, n)])]), 422, "was not uploaded"),
        "no-metadata": (shard_of([(sha, [(name, 0, 1, n)])], metadata=False), 422, "sha256"),
        "range-past-end": (shard_of([(sha, [(name, 0, 5, n)])]), 422, "past the end"),
        "empty-range": (shard_of([(sha, [(name, 1, 1, 0)])]), 422, "empty chunk range"),
        "size-lies": (shard_of([(sha, [(name, 0, 1, n + 1)])]), 422, "size"),
        "too-large-file": (shard_of([(sha, [(name, 0, 1, 1 << 31)] * 2)]), 413, "limit"),
        "bad-magic": (b"\0" * 32 + shard_of([])[32:], 422, "magic"),
        "bad-version": (SHARD_TAG + struct.pack("<QQ", 3, 0) + b"\xff" * 32 + bytes(16), 422, "version"),
        "truncated": (shard_of([(sha, [(name, 0, 1, n)])])[:-60], 422, "ends inside"),
        "too-many-terms": (SHARD_TAG + struct.pack("<QQ", 2, 0) + bytes(32) + struct.pack("<II", 1 << 30, 10**9)
                           + bytes(8), 422, "more than the shard holds"),
    }


def test_bad_shards_are_refused_and_nothing_is_kept(live, cas):
    base, headers = cas
    data = os.urandom(4000)
    name = _stored_xorb(live, cas, data)
    for case, (body, status, needle) in _bad_shards(name, data).items():
        before = kept(live.home)
        started = time.monotonic()
        r = httpx.post(f"{base}/v1/shards", content=body, headers=headers, timeout=30)
        assert r.status_code == status, (case, r.text)
        assert needle in r.json()["error"], (case, r.text)
        assert kept(live.home) == before, case
        assert time.monotonic() - started < 5, case


def test_oversized_shard_is_refused(cas):
    base, headers = cas
    r = httpx.post(f"{base}/v1/shards", content=b"\0" * ((16 << 20) + 1), headers=headers, timeout=60)
    assert r.status_code == 413
