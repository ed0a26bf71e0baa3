"""Concurrent pulls and pushes against a live server for a few seconds: no errors, and afterwards
every blob intact, every pushed commit in the catalog with the pushed digest, no staging left.

The load generator is this test's own. ``bench/hub_load.py`` runs a longer load of the same kind
(plus throughput figures) against an ``adapterhub serve`` process; tests do not import benchmarks
and benchmarks do not import tests, so each keeps its own short loop.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from huggingface_hub import HfApi, hf_hub_download

from adapterhub.app import AdapterHub
from adapterhub.lora import CONFIG_NAME, WEIGHTS_NAME, AdapterConfig, LoraAdapter
from tests.helpers import file_sha256, random_adapter, staging_folders


@dataclass
class Load:
    pulls: int = 0
    pushes: int = 0
    errors: list[str] = field(default_factory=list)
    commits: list[tuple[str, str, str]] = field(default_factory=list)  # (repo, commit, pushed digest)


def run_load(url: str, token: str, repos: list[str], workdir: Path, *, seconds: float, pullers: int,
             pushers: int) -> Load:
    """``pullers`` threads pull (model_info, the pinned files, sha256 against the listed LFS sha256,
    adapter validation) from ``repos`` and the push repos, while ``pushers`` threads push new random
    adapters to a repo of their own and, every third push, to one shared repo. Every exception is
    collected in ``errors``."""
    load, lock = Load(), threading.Lock()
    push_repos = [f"load/push-{w}" for w in range(pushers)] + ["load/shared"]
    api = HfApi(endpoint=url, token=token)
    for i, repo in enumerate(push_repos):  # a first commit in each, so pullers can read them at once
        api.create_repo(repo, exist_ok=True)
        adapter = random_adapter(10_000_000 + i)
        commit = api.upload_folder(repo_id=repo, folder_path=str(adapter.save(workdir / f"first-{i}"))).oid
        load.commits.append((repo, commit, adapter.digest))
    readable = repos + push_repos
    deadline = time.monotonic() + seconds

    def pull(w: int, i: int) -> None:
        repo = readable[(w + i) % len(readable)]
        cache = workdir / f"pull-{w}-{i}"
        try:
            info = HfApi(endpoint=url).model_info(repo, files_metadata=True)
            listed = {s.rfilename: s.lfs.sha256 for s in info.siblings if s.lfs}[WEIGHTS_NAME]
            weights, config = (Path(hf_hub_download(repo, name, revision=info.sha, endpoint=url, cache_dir=str(cache)))
                               for name in (WEIGHTS_NAME, CONFIG_NAME))
            assert file_sha256(weights) == listed, f"{repo}@{info.sha}: weights do not hash to the listed sha256"
            LoraAdapter.from_files(AdapterConfig.load(config), weights)  # validates shapes and values
        finally:
            shutil.rmtree(cache, ignore_errors=True)
        with lock:
            load.pulls += 1

    def push(w: int, i: int) -> None:
        repo = "load/shared" if i % 3 == 2 else f"load/push-{w}"
        adapter = random_adapter(w * 1_000_000 + i)
        folder = adapter.save(workdir / f"push-{w}-{i}")
        try:
            commit = HfApi(endpoint=url, token=token).upload_folder(
                repo_id=repo, folder_path=str(folder), commit_message=f"load {w}/{i}"
            ).oid
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        with lock:
            load.pushes += 1
            load.commits.append((repo, commit, adapter.digest))

    def until_deadline(step: Callable[[int, int], None], w: int) -> None:
        i = 0
        while time.monotonic() < deadline:
            try:
                step(w, i)
            except BaseException as e:  # noqa: BLE001 - every failure is reported
                with lock:
                    load.errors.append(f"{step.__name__} {w}/{i}: {type(e).__name__}: {e}")
            i += 1

    threads = [threading.Thread(target=until_deadline, args=(pull, w)) for w in range(pullers)]
    threads += [threading.Thread(target=until_deadline, args=(push, w)) for w in range(pushers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 300)
        if t.is_alive():
            load.errors.append(f"{t.name} did not finish within {seconds + 300:.0f} s")
    return load


@pytest.mark.slow
def test_concurrent_pulls_and_pushes(live, tmp_path):
    repos = [live.hub.add_adapter(random_adapter(500 + i), f"seed/load-{i}").name for i in range(3)]
    load = run_load(live.url, live.token, repos, tmp_path, seconds=5, pullers=8, pushers=2)
    assert load.errors == []
    assert load.pulls >= 8 and load.pushes >= 2
    with AdapterHub(live.home) as hub:  # a second facade on the server's home, as after a restart
        blobs = list(hub.blobs.digests())
        assert len(blobs) >= len(repos)
        assert [d for d in blobs if not hub.blobs.verify(d)] == []  # every blob re-hashed
        assert hub.verify()["missing"] == []
        wrong = [(repo, commit) for repo, commit, digest in load.commits
                 if hub.catalog.get_revision(repo, commit).digest != digest]
        assert wrong == []
    assert staging_folders(live.home) == []
    lfs = live.home / "uploads" / "lfs"  # every received object went into the blob store at its commit
    assert ([p.name for p in lfs.iterdir() if p.name != ".url-key"] if lfs.is_dir() else []) == []
