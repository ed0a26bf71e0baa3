"""The facade's hub commit path without HTTP: what a commit stores, refuses and keeps."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from adapterhub.app import AdapterHub
from adapterhub.errors import (
    CommitConflictError,
    ForbiddenFileError,
    InvalidAdapterError,
    InvalidRepoPathError,
    RepoNotFoundError,
    UploadTooLargeError,
)
from adapterhub.hubformat import check_allowed_file, check_repo_path
from adapterhub.hubformat.rules import HEAD_BYTES, looks_like_pickle
from tests.helpers import staging_folders, store_state, write_random_adapter


def commit(hub: AdapterHub, repo: str, files: dict[str, bytes], **kwargs) -> str:
    with hub.hub_staging() as staging:
        for path, data in files.items():
            staging.add_bytes(path, data)
        return hub.hub_commit(repo, staging, **kwargs)


@pytest.fixture
def hub(tmp_path: Path):
    hub = AdapterHub(tmp_path / "home")
    yield hub
    hub.close()


@pytest.fixture
def files(tmp_path: Path) -> dict[str, bytes]:
    folder = write_random_adapter(tmp_path / "a", seed=3)
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_commit_creates_the_entry_then_revisions(hub, files):
    assert hub.hub_create_repo("acme/c")
    first = commit(hub, "acme/c", {**files, "README.md": b"# one\n"}, message="one")
    assert hub.get("acme/c").revision == first
    assert commit(hub, "acme/c", {**files, "README.md": b"# one\n"}) == first  # nothing changed
    second = commit(hub, "acme/c", {"README.md": b"# two\n"}, message="two", parent_commit=first[:8])
    assert [r.revision for r in hub.catalog.revisions("acme/c")] == [second, first]
    assert hub.hub_snapshot("acme/c", first).files["README.md"].read_small() == b"# one\n"
    assert hub.hub_snapshot("acme/c").files["README.md"].read_small() == b"# two\n"
    with pytest.raises(CommitConflictError, match="fetch the head"):
        commit(hub, "acme/c", {"README.md": b"# three\n"}, parent_commit=first)


def test_commit_refusals(hub, files):
    with pytest.raises(RepoNotFoundError):
        commit(hub, "acme/none", files)
    hub.hub_create_repo("acme/r")
    with pytest.raises(InvalidAdapterError, match="would not hold"):
        commit(hub, "acme/r", {"README.md": b"# no adapter\n"})
    with pytest.raises(ForbiddenFileError):
        commit(hub, "acme/r", {**files, "adapter_model.bin": b"\x80\x02}q\x00."})
    with hub.hub_staging(max_bytes=100) as staging, pytest.raises(UploadTooLargeError):
        staging.add_bytes("adapter_model.safetensors", files["adapter_model.safetensors"])
    assert not hub.catalog.exists("acme/r") and list(hub.blobs.digests()) == []


@pytest.mark.parametrize("path", ["", "/a", "a/../b", "..", "./a", "a//b", "a\\b", "C:x", ".git/x", "a\x00b", "x" * 1025])
def test_unsafe_repo_paths(path):
    with pytest.raises(InvalidRepoPathError):
        check_repo_path(path)


@pytest.mark.parametrize("path", ["README.md", "a/b/c.json", "weird name.txt", "dots.in.name", ".gitattributes"])
def test_safe_repo_paths(path):
    assert check_repo_path(path) == path


def test_gc_keeps_the_blobs_of_revision_files(hub, files):
    hub.hub_create_repo("acme/g")
    commit(hub, "acme/g", {**files, "README.md": b"# kept\n"})
    hub.gc(grace_seconds=0)
    assert hub.hub_snapshot("acme/g").files["README.md"].read_small() == b"# kept\n"


def test_staging_left_by_a_killed_server_is_removed_later(hub):
    import os

    stale = hub.settings.home / "uploads" / ".upload-killed"
    stale.mkdir(parents=True)
    (stale / "000001").write_bytes(b"half a file")
    os.utime(stale / "000001", (1, 1))  # a file still being written would have a fresh mtime
    os.utime(stale, (1, 1))
    fresh = hub.settings.home / "uploads" / ".upload-busy"
    fresh.mkdir()
    with hub.hub_staging():
        pass
    assert not stale.exists() and fresh.exists()


# -- issue 9, item 6: pickles of every protocol, under any name; case-insensitive path rules -----------


class _RunsCode:
    """What an attacker pickles: loading it calls os.system."""

    def __reduce__(self):  # type: ignore[no-untyped-def]
        import os

        return (os.system, ("echo pwned",))


PROTOCOL_0 = pickle.dumps(_RunsCode(), protocol=0)  # b"cposix\nsystem\n(Vecho pwned\n..." - no 0x80
PROTOCOL_1 = pickle.dumps(_RunsCode(), protocol=1)
HAND_MADE = b"c__builtin__\neval\n(Vprint('pwned')\ntR."
DATA_PICKLE = pickle.dumps({"w": [1.0, 2.0]}, protocol=0)  # b"(dp0\nVw\n..."
PADDED = b"N0" * 40_000 + HAND_MADE  # the payload after more than HEAD_BYTES of harmless opcodes
PICKLES = {"protocol-0": PROTOCOL_0, "protocol-1": PROTOCOL_1, "hand-made": HAND_MADE, "data": DATA_PICKLE,
           "padded": PADDED}


@pytest.mark.parametrize("name", ["notes.txt", "model.safetensors", "README.md", "extra/config.json", "x"])
@pytest.mark.parametrize("kind", list(PICKLES))
def test_pickles_of_every_protocol_are_refused_under_any_name(hub, files, tmp_path, name, kind):
    hub.hub_create_repo("acme/p")
    before = store_state(hub.settings.home)
    with pytest.raises(ForbiddenFileError):
        commit(hub, "acme/p", {**files, name: PICKLES[kind]})
    assert store_state(hub.settings.home) == before and not hub.catalog.exists("acme/p")
    assert not staging_folders(hub.settings.home)


@pytest.mark.parametrize(
    "path",
    [".GIT/config", ".Git/config", "a/.gIt/HEAD", "GIT~1/config", "adapter_model.BIN", "adapter_model.bin.",
     "adapter_model.bin ", "adapter_model.bin. .", " leading", "weights.Pt", "a./b", "x.bin::$DATA", "notes.txt:x"],
)
def test_case_and_trailing_dot_bypasses_are_refused(hub, files, path):
    hub.hub_create_repo("acme/q")
    before = store_state(hub.settings.home)
    with pytest.raises((InvalidRepoPathError, ForbiddenFileError)):
        commit(hub, "acme/q", {**files, path: b"plain text\n"})
    assert store_state(hub.settings.home) == before and not hub.catalog.exists("acme/q")


@pytest.mark.parametrize(
    "data",
    [b"# Title\n\nSome text.\n", b"---\nlicense: mit\n---\n# card\n", b'{"a": [1, 2]}', b"Notes about things\n",
     b"Version 1\nVersion 2\n", b"Xylophone\n", b"Project notes\nmore\n", b"I like it.\n", b"", b"\x00\x01binary",
     "naïve café\n".encode()],
)
def test_text_json_and_binary_that_is_no_pickle_is_kept(hub, files, data):
    hub.hub_create_repo("acme/t")
    commit(hub, "acme/t", {**files, "notes.txt": data})
    assert hub.hub_snapshot("acme/t").files["notes.txt"].read_small() == data


def test_a_safetensors_header_that_starts_like_a_pickle_marker_is_kept():
    import json
    import struct

    header = json.dumps({"__metadata__": {"pad": ""}}).encode()
    header += b" " * (0x280 - len(header))  # length 0x280: the file starts 0x80 0x02, like a protocol-2 pickle
    data = struct.pack("<Q", len(header)) + header
    check_allowed_file("extra.safetensors", data, size=len(data))
    with pytest.raises(ForbiddenFileError, match="safetensors header"):
        check_allowed_file("extra.safetensors", b"{not safetensors}", size=17)


def test_the_pickle_check_follows_pickle_s_grammar():
    for data in PICKLES.values():
        head = data[:HEAD_BYTES]
        assert looks_like_pickle(head, size=len(data)), data[:40]
    assert looks_like_pickle(b"cos\nsystem\n(S'e")  # a client's 16-byte sample at preupload
    assert not looks_like_pickle(b"N" * 100, size=100)  # ends without STOP: pickle.load fails, runs nothing
    assert looks_like_pickle(b"N" * HEAD_BYTES, size=HEAD_BYTES + 1)  # 64 KiB of opcodes and more to come
    assert not looks_like_pickle(b"Np99999999999\n", size=14)  # no memory bomb in the probe


# -- issue 9, item 15: staging folders of killed uploads ------------------------------------------------


def _aged(folder: Path, seconds: float) -> Path:
    import os
    import time

    when = time.time() - seconds
    for f in [*folder.iterdir(), folder]:
        os.utime(f, (when, when))
    return folder


def _left_behind(uploads: Path, name: str, age: float) -> Path:
    folder = uploads / name
    folder.mkdir(parents=True)
    (folder / "000001").write_bytes(b"x" * 1000)
    return _aged(folder, age)


def test_gc_removes_staging_past_its_grace_and_keeps_uploads_in_progress(hub):
    uploads = hub.settings.home / "uploads"
    old = _left_behind(uploads, ".upload-1@elsewhere-old", 7200)  # another host's: only age counts
    young = _left_behind(uploads, ".upload-1@elsewhere-young", 60)
    with hub.hub_staging() as busy:  # an upload this process is receiving
        busy.add_bytes("README.md", b"# in progress\n")
        _aged(busy.folder, 7200)
        result = hub.gc(grace_seconds=3600)
        assert result["staging"] == [str(old)] and result["bytes_freed"] >= 1000
        assert not old.exists() and young.exists() and busy.folder.exists()
        result = hub.gc(grace_seconds=0)  # everything not in use by this process
        assert result["staging"] == [str(young)] and busy.folder.exists()
    assert not list(uploads.iterdir())


def test_a_restart_removes_the_staging_of_its_killed_predecessor_at_once(hub):
    import signal
    import subprocess
    import sys

    uploads = hub.settings.home / "uploads"
    script = (
        "import sys, time\n"
        "from adapterhub.hubformat.staging import UploadStaging\n"
        "s = UploadStaging(__import__('pathlib').Path(sys.argv[1]))\n"
        "w = s.writer(); w.write(b'x' * 4096); w._file.flush()\n"
        "print(s.folder, flush=True); time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(uploads)], stdout=subprocess.PIPE, text=True)
    try:
        folder = Path(proc.stdout.readline().strip())  # type: ignore[union-attr]
        assert folder.exists() and hub.gc()["staging"] == []  # its process is alive: kept
    finally:
        proc.send_signal(signal.SIGKILL)  # killed mid-upload
        proc.wait()
    assert folder.exists()
    with hub.hub_staging():  # the next upload (a restarted server) cleans up at once, no 24 h wait
        assert not folder.exists()
