"""Bad uploads and requests: each gets a clear 4xx JSON error and changes nothing in the store.

Commits are sent as raw NDJSON (the client refuses some of these paths itself); the catalog and
the blob store are listed before and after each request.
"""

from __future__ import annotations

import base64
import io
import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest
import torch
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

from tests.helpers import MAX_UPLOAD, staging_folders, store_state, write_random_adapter

REPO = "acme/target"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def file_op(path: str, data: bytes) -> dict:
    return {"key": "file", "value": {"content": b64(data), "path": path, "encoding": "base64"}}


def body(*ops: dict, header: bool = True) -> bytes:
    lines = ([{"key": "header", "value": {"summary": "test", "description": ""}}] if header else []) + list(ops)
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


@pytest.fixture(scope="module")
def adapter_files(tmp_path_factory) -> dict[str, bytes]:
    folder = write_random_adapter(tmp_path_factory.mktemp("bad") / "a", seed=21)
    return {p.name: p.read_bytes() for p in folder.iterdir()}


@pytest.fixture(scope="module")
def target(live, adapter_files, tmp_path_factory):
    """A repo with one good commit; every bad request below targets it."""
    folder = write_random_adapter(tmp_path_factory.mktemp("good") / "a", seed=20)
    api = HfApi(endpoint=live.url, token=live.token)
    api.create_repo(REPO)
    api.upload_folder(repo_id=REPO, folder_path=str(folder))
    return live


def valid_ops(files: dict[str, bytes]) -> list[dict]:
    return [file_op("adapter_config.json", files["adapter_config.json"]),
            file_op("adapter_model.safetensors", files["adapter_model.safetensors"])]


def torch_pickle() -> bytes:
    buffer = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, buffer)
    return buffer.getvalue()


def legacy_pickle() -> bytes:
    buffer = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, buffer, _use_new_zipfile_serialization=False)
    return buffer.getvalue()


CASES: dict[str, tuple[Callable[[dict[str, bytes]], bytes], int, str]] = {
    "dotdot": (lambda f: body(*valid_ops(f), file_op("../x", b"x")), 400, "'..'"),
    "dotdot-inside": (lambda f: body(*valid_ops(f), file_op("a/../../x", b"x")), 400, "'..'"),
    "absolute": (lambda f: body(*valid_ops(f), file_op("/etc/x", b"x")), 400, "absolute"),
    "backslash": (lambda f: body(*valid_ops(f), file_op("a\\..\\x", b"x")), 400, "backslash"),
    "dot-git": (lambda f: body(*valid_ops(f), file_op(".git/config", b"x")), 400, ".git"),
    "bin-weights": (lambda f: body(file_op("adapter_config.json", f["adapter_config.json"]),
                                   file_op("adapter_model.bin", torch_pickle())), 422, "pickled"),
    "pt-file": (lambda f: body(*valid_ops(f), file_op("extra/weights.pt", torch_pickle())), 422, "pickled"),
    "pkl-file": (lambda f: body(*valid_ops(f), file_op("x.pkl", b"\x80\x04N.")), 422, "pickled"),
    "pickle-in-disguise": (lambda f: body(*valid_ops(f), file_op("notes.txt", legacy_pickle())), 422, "pickle"),
    "zip-in-disguise": (lambda f: body(*valid_ops(f), file_op("README.md", torch_pickle())), 422, "zip"),
    "bad-base64": (lambda f: body(*valid_ops(f)).replace(b'"content": "', b'"content": "!!', 1), 422, "base64"),
    "truncated-body": (lambda f: body(*valid_ops(f))[:-500], 422, "truncated"),
    "truncated-weights": (lambda f: body(file_op("adapter_config.json", f["adapter_config.json"]),
                                         file_op("adapter_model.safetensors",
                                                 f["adapter_model.safetensors"][:-100])), 422, ""),
    "bad-config": (lambda f: body(file_op("adapter_config.json", json.dumps({"peft_type": "LORA", "r": 0,
                                                                             "lora_alpha": 2}).encode()),
                                  file_op("adapter_model.safetensors", f["adapter_model.safetensors"])), 422, "'r'"),
    "not-json": (lambda f: body(*valid_ops(f)) + b"{nope\n", 422, "not valid JSON"),
    "no-header": (lambda f: body(*valid_ops(f), header=False), 422, "header"),
    "lfs-op": (lambda f: body({"key": "lfsFile", "value": {"path": "big.safetensors", "algo": "sha256",
                                                           "oid": "0" * 64, "size": 10}}), 422, "inline"),
    "unknown-op": (lambda f: body({"key": "rename", "value": {"path": "x"}}), 422, "unknown commit operation"),
    "delete-weights": (lambda f: body({"key": "deletedFile", "value": {"path": "adapter_model.safetensors"}}),
                       422, "would not hold"),
    "too-large": (lambda f: body(*valid_ops(f), file_op("big.txt", b"x" * (MAX_UPLOAD + 1))), 413, "limit"),
    "not-utf8": (lambda f: body(*valid_ops(f)) + b'{"key": "\xff"}\n', 422, "not valid JSON"),
    "file-without-path": (lambda f: body(*valid_ops(f), {"key": "file", "value": {"content": b64(b"x")}}), 400, "path"),
    "delete-folder-without-path": (lambda f: body({"key": "deletedFolder", "value": {}}), 400, "path"),
    "delete-with-a-number-path": (lambda f: body({"key": "deletedFile", "value": {"path": 7}}), 400, "path"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_commit_is_refused_and_changes_nothing(target, adapter_files, case):
    make, status, needle = CASES[case]
    before = store_state(target.home)
    response = httpx.post(
        f"{target.url}/api/models/{REPO}/commit/main",
        content=make(adapter_files),
        headers={"Authorization": f"Bearer {target.token}", "Content-Type": "application/x-ndjson"},
        timeout=60,
    )
    assert response.status_code == status, response.text
    assert needle in response.json()["error"]
    assert store_state(target.home) == before
    assert not staging_folders(target.home)  # staging folders are removed


def test_body_over_the_limit_is_refused_before_it_is_read(target):
    before = store_state(target.home)
    big = b"x" * (MAX_UPLOAD * 2 + (2 << 20))
    try:
        response = httpx.post(
            f"{target.url}/api/models/{REPO}/commit/main",
            content=big,
            headers={"Authorization": f"Bearer {target.token}"},
            timeout=60,
        )
        assert response.status_code == 413 and "limit" in response.json()["error"]
    except httpx.TransportError:
        pass  # the server answered before the body was sent and closed the connection: also a refusal
    assert store_state(target.home) == before


def test_client_that_disconnects_mid_body_leaves_nothing(target, adapter_files):
    before = store_state(target.home)
    payload = body(*valid_ops(adapter_files))
    url = urlparse(target.url)
    with socket.create_connection((url.hostname, url.port)) as sock:
        head = (
            f"POST /api/models/{REPO}/commit/main HTTP/1.1\r\nHost: {url.netloc}\r\n"
            f"Authorization: Bearer {target.token}\r\nContent-Length: {len(payload)}\r\n\r\n"
        )
        sock.sendall(head.encode() + payload[: len(payload) // 2])
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(10)
        try:
            sock.recv(1024)
        except OSError:
            pass
    deadline = time.monotonic() + 10
    while staging_folders(target.home) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not staging_folders(target.home)
    assert store_state(target.home) == before


def test_preupload_refuses_early(target):
    headers = {"Authorization": f"Bearer {target.token}"}
    url = f"{target.url}/api/models/{REPO}/preupload/main"

    def files(path: str, size: int = 1, sample: bytes = b"x") -> dict:
        return {"files": [{"path": path, "size": size, "sample": b64(sample)}]}

    assert httpx.post(url, json=files("../x"), headers=headers).status_code == 400
    assert httpx.post(url, json=files("adapter_model.bin"), headers=headers).status_code == 422
    assert httpx.post(url, json=files("README.md", sample=b"\x80\x04N."), headers=headers).status_code == 422
    assert httpx.post(url, json=files("a.txt", size=MAX_UPLOAD + 1), headers=headers).status_code == 413
    ok = httpx.post(url, json=files("a.txt"), headers=headers)
    assert ok.json() == {"files": [{"path": "a.txt", "uploadMode": "regular", "shouldIgnore": False}], "commitOid": None}


def test_the_client_sees_the_size_limit_at_preupload(target, tmp_path):
    before = store_state(target.home)
    api = HfApi(endpoint=target.url, token=target.token)
    with pytest.raises(HfHubHTTPError, match="limit"):
        api.upload_file(path_or_fileobj=b"x" * (MAX_UPLOAD + 1), path_in_repo="big.txt", repo_id=REPO)
    assert store_state(target.home) == before


def test_unknown_repo_and_revision(target, adapter_files):
    headers = {"Authorization": f"Bearer {target.token}"}
    for url, method in [
        (f"{target.url}/api/models/acme/none/commit/main", "POST"),
        (f"{target.url}/api/models/acme/none/preupload/main", "POST"),
        (f"{target.url}/api/models/acme/none", "GET"),
        (f"{target.url}/api/models/acme/none/tree/main", "GET"),
        (f"{target.url}/acme/none/resolve/main/adapter_config.json", "GET"),
    ]:
        response = httpx.request(method, url, headers=headers, content=body(*valid_ops(adapter_files)))
        assert response.status_code == 404, url
        assert response.headers["x-error-code"] == "RepoNotFound"
        assert "acme/none" in response.json()["error"]
    response = httpx.post(f"{target.url}/api/models/{REPO}/commit/dev", headers=headers,
                          content=body(*valid_ops(adapter_files)))
    assert response.status_code == 404 and response.headers["x-error-code"] == "RevisionNotFound"
    with pytest.raises(RepositoryNotFoundError):
        HfApi(endpoint=target.url, token=target.token).upload_file(
            path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="acme/none"
        )


@pytest.mark.parametrize("token", [None, "nope", "reader"])
def test_writes_need_a_write_token(target, adapter_files, token):
    before = store_state(target.home)
    secret = target.read_token if token == "reader" else token
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    for url in (f"{target.url}/api/models/{REPO}/commit/main", f"{target.url}/api/repos/create"):
        response = httpx.post(url, headers=headers, content=body(*valid_ops(adapter_files)))
        assert response.status_code == (403 if token == "reader" else 401)  # read-only: forbidden, as on the HF hub
        assert "token" in response.json()["error"]
    if token == "nope":
        assert response.headers["x-error-message"] == "Invalid credentials in Authorization header"
    api = HfApi(endpoint=target.url, token=secret or False)
    with pytest.raises(HfHubHTTPError):
        api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=REPO)
    assert store_state(target.home) == before


def test_bad_token_is_refused_on_reads_too(target):
    response = httpx.get(f"{target.url}/api/models/{REPO}", headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401
    assert httpx.get(f"{target.url}/api/models/{REPO}").status_code == 200


def test_no_leftover_staging(target):
    assert not staging_folders(target.home)
