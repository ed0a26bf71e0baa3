"""Several server processes on one home: concurrent commits to one repo lose nothing (issue 9, item 11).

The attack replayed: two `adapterhub serve` processes (one of them with `--workers 2`) on one catalog,
8 commits from 8 threads at once, spread over the servers. With a per-process lock only 4-5 files
survived although every commit reported success, and a stale `parentCommit` was accepted. The head
must move by compare-and-set in the database: every reported commit id is in the history, every
file is in the final head, and a commit built on a stale parent gets 412.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from adapterhub.app import AdapterHub
from tests.helpers import free_port, postgres_database, wait_until_serving, write_random_adapter

N_COMMITS = 8
REPO = "acme/raced"


@contextmanager
def _server(home: Path, database_url: str, *, workers: int = 1) -> Iterator[str]:
    """`adapterhub serve` as a user starts it, in its own process; yields its URL."""
    port = free_port()
    env = {**os.environ, "ADAPTERHUB_HOME": str(home), "ADAPTERHUB_DATABASE_URL": database_url}
    command = [sys.executable, "-m", "adapterhub.cli.main", "serve", "--port", str(port), "--log-level", "warning"]
    proc = subprocess.Popen([*command, "--workers", str(workers)], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(f"{url}/v1/health", proc)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _race(commit, n: int = N_COMMITS) -> list[str]:
    """Run ``commit(i)`` for i < n from n threads released at once; returns their commit ids."""
    barrier = threading.Barrier(n)
    results: list[object] = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = commit(i).oid
        except Exception as e:  # noqa: BLE001 - reported below with the others
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    failures = [r for r in results if not isinstance(r, str)]
    assert not failures, failures
    return [str(r) for r in results]


def _replay(tmp_path: Path, database_url: str, *, workers: tuple[int, int]) -> None:
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError

    home = tmp_path / "home"
    with AdapterHub(home, database_url=database_url) as hub:
        token = hub.create_token(name="acme")["token"]  # owner: acme (its name)
    adapter = write_random_adapter(tmp_path / "adapter", seed=3)
    adapter_files = {p.name: p.read_bytes() for p in adapter.iterdir()}
    with ExitStack() as stack:
        urls = [stack.enter_context(_server(home, database_url, workers=w)) for w in workers]
        apis = [HfApi(endpoint=url, token=token) for url in urls]
        apis[0].create_repo(REPO)

        # 1. the first revision races: 8 commits to an empty repo, each with the adapter and its own file
        def first(i: int):  # type: ignore[no-untyped-def]
            ops = [CommitOperationAdd(p, data) for p, data in adapter_files.items()]
            ops.append(CommitOperationAdd(f"first/{i}.json", json.dumps({"i": i}).encode()))
            return apis[i % len(apis)].create_commit(REPO, ops, commit_message=f"first {i}")

        reported = _race(first)
        # 2. then 8 commits on the existing head, through upload_file (preupload + commit)
        def more(i: int):  # type: ignore[no-untyped-def]
            return apis[i % len(apis)].upload_file(
                path_or_fileobj=json.dumps({"more": i}).encode(), path_in_repo=f"more/{i}.json", repo_id=REPO
            )

        reported += _race(more)
        head = apis[1].model_info(REPO).sha
        # 3. a commit built on a parent that is no longer the head is refused, whichever server gets it
        stale = reported[0] if reported[0] != head else reported[1]
        for api in apis:
            with pytest.raises(HfHubHTTPError) as refused:
                api.create_commit(
                    REPO, [CommitOperationAdd("late.json", b"{}")], commit_message="late", parent_commit=stale
                )
            assert refused.value.response.status_code == 412
        # ...and the current head is still accepted as a parent
        apis[0].create_commit(REPO, [CommitOperationAdd("last.json", b"{}")], commit_message="x", parent_commit=head)

    with AdapterHub(home, database_url=database_url) as hub:
        history = [r.revision for r in hub.catalog.revisions(REPO)]
        files = set(hub.hub_snapshot(REPO).files)
        missing_blobs = hub.verify()
    assert set(reported) <= set(history), "a commit reported success but is not in the history"
    assert len(history) == len(set(reported)) + 1  # no revision beyond the reported ones and the last
    assert {f"first/{i}.json" for i in range(N_COMMITS)} <= files
    assert {f"more/{i}.json" for i in range(N_COMMITS)} <= files
    assert "late.json" not in files and "last.json" in files
    assert missing_blobs == {"missing": [], "corrupt": []}


@pytest.mark.slow
@pytest.mark.postgres
def test_two_servers_one_with_two_workers_on_postgresql(tmp_path, postgres_admin, online):
    with postgres_database(postgres_admin) as url:
        _replay(tmp_path, url, workers=(1, 2))


@pytest.mark.slow
def test_two_servers_on_one_sqlite_home(tmp_path, online):
    _replay(tmp_path, f"sqlite:///{tmp_path / 'home' / 'catalog.db'}", workers=(1, 1))
