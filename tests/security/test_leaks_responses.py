"""Leaks and crashes in responses (issue 9, item 8), replayed on a live server.

- a ``%00`` (or ``%0d%0a``) in the URL path: a clean 4xx whose headers hold no control character
  (``h11`` used to drop the connection when the NUL reached ``X-Error-Message``);
- errors about staged uploads and missing blobs name no server path;
- the home is 0700 and ``catalog.db`` and blobs are 0600 whatever the umask.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import stat
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest
from huggingface_hub import HfApi

from adapterhub.app import AdapterHub
from tests.helpers import store_state, write_random_adapter

REPO = "acme/leaks"


def raw_get(url: str, path: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """GET ``path`` exactly as written (no client-side normalisation); (status, headers, body)."""
    parsed = urlparse(url)
    with socket.create_connection((parsed.hostname, parsed.port), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {parsed.netloc}\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while data := sock.recv(65536):
            answer += data
    assert answer, f"the server closed the connection without answering {path!r}"
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    headers = [tuple(line.split(b":", 1)) for line in lines[1:]]
    return status, headers, body  # type: ignore[return-value]


@pytest.fixture(scope="module")
def target(live, tmp_path_factory):
    folder = write_random_adapter(tmp_path_factory.mktemp("leaks") / "a", seed=40)
    api = HfApi(endpoint=live.url, token=live.token)
    api.create_repo(REPO)
    api.upload_folder(repo_id=REPO, folder_path=str(folder))
    return live


@pytest.mark.parametrize(
    "path",
    [
        "/acme/x%00y/resolve/main/README.md",
        "/api/models/acme/x%00y",
        f"/api/models/{REPO}/tree/main/a%00b",
        f"/{REPO}/resolve/main/a%00b.txt",
        "/v1/adapters/acme/x%00y",
        "/api/models/acme/x%0d%0aSet-Cookie:%20stolen=1",
        f"/{REPO}/resolve/main/a%0d%0aX-Injected:%201",
    ],
)
def test_control_characters_in_the_path_give_a_clean_4xx(target, path):
    status, headers, body = raw_get(target.url, path)
    assert 400 <= status < 500, body
    names = {name.strip().lower() for name, _ in headers}
    assert b"set-cookie" not in names and b"x-injected" not in names
    for name, value in headers:
        assert not any(c < 0x20 and c != 0x09 or c == 0x7F for c in value), (name, value)


def test_header_values_are_cleaned_of_control_characters():
    from adapterhub.server.bodylimit import clean_header_value

    assert clean_header_value(b"bad \x00name\r\nX-Injected: 1\n") == b"bad  name  X-Injected: 1"
    assert clean_header_value(b"\tkept\ttabs\t") == b"kept\ttabs"


def _leaks(text: str, home: Path) -> bool:
    return str(home) in text or str(home.resolve()) in text or "/uploads/" in text or "/blobs/sha256" in text


def test_errors_about_staged_files_name_no_server_path(target, tmp_path):
    folder = write_random_adapter(tmp_path / "a", seed=41)
    weights = (folder / "adapter_model.safetensors").read_bytes()[:-100]  # truncated
    lines = [
        {"key": "header", "value": {"summary": "x", "description": ""}},
        {"key": "file", "value": {"path": "adapter_config.json", "encoding": "base64",
                                  "content": base64.b64encode((folder / "adapter_config.json").read_bytes()).decode()}},
        {"key": "file", "value": {"path": "adapter_model.safetensors", "encoding": "base64",
                                  "content": base64.b64encode(weights).decode()}},
    ]
    before = store_state(target.home)
    response = httpx.post(
        f"{target.url}/api/models/{REPO}/commit/main",
        content=b"".join(json.dumps(line).encode() + b"\n" for line in lines),
        headers={"Authorization": f"Bearer {target.token}", "Content-Type": "application/x-ndjson"},
        timeout=30,
    )
    assert response.status_code == 422, response.text
    assert not _leaks(response.text, target.home), response.text
    assert not _leaks(str(response.headers), target.home), response.headers
    assert store_state(target.home) == before


def test_a_missing_blob_is_reported_without_its_path(target):
    revision = HfApi(endpoint=target.url).model_info(REPO).sha
    digest = target.hub.hub_snapshot(REPO, revision).files["adapter_model.safetensors"].sha256
    blob = target.hub.blobs.path(digest)
    saved = blob.read_bytes()
    blob.unlink()
    try:
        response = httpx.get(f"{target.url}/{REPO}/resolve/main/adapter_model.safetensors", timeout=10)
    finally:
        blob.write_bytes(saved)
        os.chmod(blob, 0o600)
    assert response.status_code >= 400
    assert digest in response.text  # the message still says which blob
    assert not _leaks(response.text, target.home), response.text
    assert not _leaks(str(response.headers), target.home), response.headers


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_live_home_keeps_catalog_and_blobs_private(target):
    database_files = list(target.home.glob("catalog.db*"))
    assert database_files
    for path in database_files:
        assert _mode(path) == 0o600, path.name
    blobs = [p for p in (target.home / "blobs").rglob("*") if p.is_file()]
    assert blobs
    for path in blobs:
        assert _mode(path) == 0o600, path.name


@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_a_new_home_is_0700_and_its_files_0600_whatever_the_umask(tmp_path, umask):
    folder = write_random_adapter(tmp_path / "a", seed=42)
    old = os.umask(umask)
    try:
        home = tmp_path / "parent" / "home"
        with AdapterHub(home) as hub:
            hub.add(folder, name="acme/private")
        assert _mode(home) == 0o700
        for path in home.glob("catalog.db*"):
            assert _mode(path) == 0o600, path.name
        blobs = [p for p in (home / "blobs").rglob("*") if p.is_file()]
        assert blobs and all(_mode(p) == 0o600 for p in blobs)
    finally:
        os.umask(old)


@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_uploads_in_flight_are_0600_in_0700_folders_whatever_the_umask(tmp_path, umask):
    """A commit's files and a received LFS object, before they reach the blob store."""
    from adapterhub.hubformat import UploadStaging
    from adapterhub.hubformat.lfs_objects import LfsObjects

    old = os.umask(umask)
    try:
        uploads = tmp_path / "home" / "uploads"
        with UploadStaging(uploads) as staging:
            writer = staging.writer()
            writer.write(b"weights")
            assert _mode(writer.local_path) == 0o600
            assert _mode(staging.folder) == 0o700 and _mode(uploads) == 0o700
            writer.close()
        receiver = LfsObjects(uploads / "lfs").receiver("0" * 64, 1)
        receiver.write(b"x")
        assert _mode(uploads / "lfs") == 0o700
        assert [_mode(p) for p in (uploads / "lfs").iterdir()] == [0o600]
        receiver.discard()
    finally:
        os.umask(old)
