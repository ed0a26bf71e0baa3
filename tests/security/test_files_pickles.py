"""Issue 9, item 6 replayed against a real server: pickles without the 0x80 marker (protocols 0 and
1) under any name, and path rules that a different case, a trailing dot or a trailing space got
around. Each is refused with a 4xx, and nothing is written (catalog, blobs, staging)."""

from __future__ import annotations

import base64
import json
import pickle

import httpx
import pytest
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError

from tests.helpers import staging_folders, store_state, write_random_adapter

REPO = "sec/pickles"


class _RunsCode:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        import os

        return (os.system, ("echo pwned",))


PROTOCOL_0 = pickle.dumps(_RunsCode(), protocol=0)
PROTOCOL_1 = pickle.dumps(_RunsCode(), protocol=1)
HAND_MADE = b"c__builtin__\neval\n(Vprint('pwned')\ntR."
DATA_PICKLE = b"(dp0\nVw\np1\nI1\ns."

# (path, content, status): every bypass the issue lists, and their cousins
BYPASSES = [
    ("notes.txt", PROTOCOL_0, 422),
    ("model.safetensors", PROTOCOL_0, 422),
    ("model.safetensors", PROTOCOL_1, 422),
    ("README.md", HAND_MADE, 422),
    ("extra/config.json", DATA_PICKLE, 422),
    ("notes.txt", b"N0" * 40_000 + HAND_MADE, 422),
    ("adapter_model.bin.", PROTOCOL_0, 400),
    ("adapter_model.bin.", b"plain", 400),
    ("adapter_model.bin ", b"plain", 400),
    ("adapter_model.BIN", b"plain", 422),
    ("weights.PT", b"plain", 422),
    (".GIT/config", b"[core]\n", 400),
    (".Git/config", b"[core]\n", 400),
    ("sub/.gIT/hooks/post-checkout", b"#!/bin/sh\n", 400),
    ("x.bin::$DATA", b"plain", 400),
]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _commit_body(*files: tuple[str, bytes]) -> bytes:
    lines = [{"key": "header", "value": {"summary": "attack", "description": ""}}]
    lines += [{"key": "file", "value": {"content": _b64(d), "path": p, "encoding": "base64"}} for p, d in files]
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_random_adapter(tmp_path_factory.mktemp("sec") / "a", seed=90)


@pytest.fixture(scope="module")
def adapter(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


@pytest.fixture(scope="module")
def target(live, folder):
    """A repo with one good commit: each attack adds its file to a valid adapter."""
    api = HfApi(endpoint=live.url, token=live.token)
    api.create_repo(REPO)
    api.upload_folder(repo_id=REPO, folder_path=str(folder))
    return live


@pytest.mark.parametrize(("path", "data", "status"), BYPASSES, ids=[f"{i}-{p!r}" for i, (p, _, _) in enumerate(BYPASSES)])
def test_commit_bypass_is_refused_and_writes_nothing(target, adapter, path, data, status):
    before = store_state(target.home)
    response = httpx.post(
        f"{target.url}/api/models/{REPO}/commit/main",
        content=_commit_body(*adapter.items(), (path, data)),
        headers={"Authorization": f"Bearer {target.token}", "Content-Type": "application/x-ndjson"},
        timeout=60,
    )
    assert response.status_code == status, response.text
    assert "/uploads/" not in response.text and str(target.home) not in response.text
    assert store_state(target.home) == before
    assert not staging_folders(target.home)


@pytest.mark.parametrize(
    ("path", "sample", "status"),
    [("notes.txt", PROTOCOL_0[:16], 422), ("notes.txt", PROTOCOL_0, 422), ("README.md", HAND_MADE, 422),
     (".GIT/config", b"x", 400), ("adapter_model.bin.", b"x", 400), ("adapter_model.BIN", b"x", 422)],
)
def test_preupload_refuses_before_the_bytes_are_sent(target, path, sample, status):
    files = {"files": [{"path": path, "size": len(sample), "sample": _b64(sample)}]}
    response = httpx.post(f"{target.url}/api/models/{REPO}/preupload/main", json=files,
                          headers={"Authorization": f"Bearer {target.token}"})
    assert response.status_code == status, response.text


def test_the_real_client_gets_an_error_and_the_repo_is_unchanged(target):
    before = store_state(target.home)
    api = HfApi(endpoint=target.url, token=target.token)
    for path, data in [("notes.txt", PROTOCOL_0), ("model.safetensors", PROTOCOL_1)]:
        with pytest.raises(HfHubHTTPError):
            api.upload_file(path_or_fileobj=data, path_in_repo=path, repo_id=REPO)
    assert store_state(target.home) == before
    assert not {"notes.txt", "model.safetensors"} & set(api.list_repo_files(REPO))


def test_text_that_is_no_pickle_still_goes_in(target):
    api = HfApi(endpoint=target.url, token=target.token)
    api.upload_file(path_or_fileobj=b"Notes about the run\ncats: 2\n", path_in_repo="notes.txt", repo_id=REPO)
    assert "notes.txt" in api.list_repo_files(REPO)
