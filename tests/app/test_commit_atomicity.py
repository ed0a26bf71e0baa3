"""One transaction per hub commit: a revision is visible with all its files, metadata and metrics,
or not at all, whichever step fails or is killed (SQLite and PostgreSQL).

A commit writes, in order: the extra files' blobs, the weights blob, then in ONE catalog
transaction the entry or revision row, the card's metadata, its metrics and the revision files.
Each step is made to fail (an exception) and, in a child process, to die (SIGKILL) right there;
afterwards the repo must look exactly as before the commit, or exactly as after a clean commit,
and no blob may be left that nothing references (after ``gc`` for killed writers).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest

from adapterhub.app import AdapterHub
from adapterhub.hubformat import render_card
from adapterhub.store.blobs import BlobStore, BlobWriter
from tests.helpers import postgres_database, write_random_adapter

REPO = Path(__file__).resolve().parents[2]
NEW_ENTRY_STEPS = ["extra_blob", "weights_blob", "add", "add_metric", "add_revision_files", "committed"]
NEW_REVISION_STEPS = ["extra_blob", "weights_blob", "add_revision", "update", "add_revision_files", "committed"]


class Injected(RuntimeError):
    pass


def _card_files(tmp: Path, seed: int, *, tags: list[str], accuracy: float) -> dict[str, bytes]:
    """A PEFT adapter plus a model card whose adapterhub section (tags, metrics) matches it."""
    folder = write_random_adapter(tmp / f"src-{seed}", seed=seed)
    with AdapterHub(tmp / f"card-home-{seed}") as maker:
        maker.add(folder, "acme/src", task="wn_pos", tags=tags)
        maker.add_metrics("acme/src", {"accuracy": accuracy}, task="wn_pos")
        card = render_card(maker.get("acme/src"), maker.catalog.lineage("acme/src"), maker.catalog.metrics("acme/src"))
    files = {p.name: p.read_bytes() for p in folder.iterdir()}
    return {**files, "README.md": card.encode(), "notes/extra.json": b'{"seed": %d}\n' % seed}


def _commit(hub: AdapterHub, repo: str, files: dict[str, bytes]) -> str:
    with hub.hub_staging() as staging:
        for path, data in files.items():
            staging.add_bytes(path, data)
        return hub.hub_commit(repo, staging, message=f"commit of {len(files)} files")


def _state(hub: AdapterHub, repo: str) -> dict[str, Any]:
    """What a reader can see of ``repo``, without ids that depend on the clock."""
    if not hub.catalog.exists(repo):
        return {"exists": False}
    record = hub.get(repo)
    revisions = []
    for rev in hub.catalog.revisions(repo):
        snapshot = hub.hub_snapshot(repo, rev.revision)
        revisions.append({p: f.sha256 for p, f in snapshot.files.items() if f.blob_path is not None})
    return {
        "exists": True,
        "digest": record.digest,
        "tags": list(record.tags),
        "task": record.task,
        "revisions": revisions,
        "metrics": sorted((m.task, m.split, m.metric, m.value) for m in hub.catalog.metrics(repo)),
    }


def _orphans(hub: AdapterHub) -> set[str]:
    return set(hub.blobs.digests()) - hub._referenced_digests()


@contextmanager
def _at_step(step: str, action: Callable[[], None]) -> Iterator[None]:
    """Run ``action`` (raise or die) when the commit reaches ``step``."""
    patch = pytest.MonkeyPatch()
    try:
        if step == "extra_blob":
            original_put = BlobStore.put_file
            patch.setattr(BlobStore, "put_file", lambda self, *a, **k: (action(), original_put(self, *a, **k))[1])
        elif step == "weights_blob":
            original_write = BlobWriter.write
            patch.setattr(BlobWriter, "write", lambda self, data: (action(), original_write(self, data))[1])
        elif step == "committed":
            from adapterhub.app import ingest, repos

            for name in ("store_new", "store_revision"):
                original = getattr(ingest, name)

                def after(*a: Any, _original: Any = original, **k: Any) -> Any:
                    result = _original(*a, **k)
                    action()
                    return result

                patch.setattr(repos, name, after)
        else:
            from adapterhub.store import Catalog

            with Catalog("sqlite://").transaction() as probe:  # the writer class, whatever its name
                writer_class = type(probe)
            original_method = getattr(writer_class, step)
            patch.setattr(writer_class, step, lambda self, *a, **k: (action(), original_method(self, *a, **k))[1])
        yield
    finally:
        patch.undo()


def _raise() -> None:
    raise Injected("injected failure")


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def child(home: str, db_url: str, files_dir: str, step: str) -> None:
    """Entry point of the killed child: commit ``files_dir`` to acme/r and die at ``step``."""
    files = {str(p.relative_to(files_dir)): p.read_bytes() for p in Path(files_dir).rglob("*") if p.is_file()}
    hub = AdapterHub(home, database_url=db_url or None)
    with _at_step(step, _die):
        _commit(hub, "acme/r", files)
    raise SystemExit(f"step {step} was never reached")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def make_db(request: pytest.FixtureRequest) -> Iterator[Callable[[], str]]:
    """Makes empty catalog databases: '' (SQLite under each home) or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield lambda: ""
        return
    admin = request.getfixturevalue("postgres_admin")
    with ExitStack() as databases:  # dropped at the end of the test
        yield lambda: databases.enter_context(postgres_database(admin))


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, bytes], dict[str, bytes]]:
    tmp = tmp_path_factory.mktemp("versions")
    return _card_files(tmp, 3, tags=["one"], accuracy=0.5), _card_files(tmp, 4, tags=["two"], accuracy=0.75)


def _fresh_hub(tmp: Path, make_db: Callable[[], str], first: dict[str, bytes] | None) -> AdapterHub:
    hub = AdapterHub(tmp, database_url=make_db() or None)
    hub.hub_create_repo("acme/r")
    if first is not None:
        _commit(hub, "acme/r", first)
    return hub


@pytest.mark.parametrize("scenario", ["new_entry", "new_revision"])
def test_a_failure_at_any_step_leaves_nothing(tmp_path, make_db, versions, scenario):
    first, second = (None, versions[0]) if scenario == "new_entry" else versions
    with _fresh_hub(tmp_path / "clean", make_db, first) as clean:
        _commit(clean, "acme/r", second)
        complete = _state(clean, "acme/r")
    steps = NEW_ENTRY_STEPS if scenario == "new_entry" else NEW_REVISION_STEPS
    for step in steps[:-1]:
        with _fresh_hub(tmp_path / step, make_db, first) as hub:
            before = _state(hub, "acme/r")
            with _at_step(step, _raise), pytest.raises(Injected):
                _commit(hub, "acme/r", second)
            assert _state(hub, "acme/r") == before, f"a failure at {step} left part of the commit visible"
            assert _orphans(hub) == set(), f"a failure at {step} left unreferenced blobs"
            assert hub.verify() == {"missing": [], "corrupt": []}
            _commit(hub, "acme/r", second)  # and the same commit goes through afterwards
            assert _state(hub, "acme/r") == complete


@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["new_entry", "new_revision"])
def test_a_kill_at_any_step_leaves_all_or_nothing(tmp_path, make_db, versions, scenario):
    first, second = (None, versions[0]) if scenario == "new_entry" else versions
    files_dir = tmp_path / "files"
    for path, data in second.items():
        (files_dir / path).parent.mkdir(parents=True, exist_ok=True)
        (files_dir / path).write_bytes(data)
    with _fresh_hub(tmp_path / "clean", make_db, first) as clean:
        _commit(clean, "acme/r", second)
        complete = _state(clean, "acme/r")
    steps = NEW_ENTRY_STEPS if scenario == "new_entry" else NEW_REVISION_STEPS
    homes = {}
    for step in steps:
        db_url = make_db()
        with _fresh_hub(tmp_path / step, lambda url=db_url: url, first) as hub:
            homes[step] = (tmp_path / step, db_url, _state(hub, "acme/r"))
    code = "import sys; from tests.app.test_commit_atomicity import child; child(*sys.argv[1:])"
    children = {
        step: subprocess.Popen([sys.executable, "-c", code, str(home), url, str(files_dir), step], cwd=REPO)
        for step, (home, url, _) in homes.items()
    }
    for step, proc in children.items():
        assert proc.wait(timeout=300) == -signal.SIGKILL, f"the child did not die at {step}"
    for step, (home, url, before) in homes.items():
        with AdapterHub(home, database_url=url or None) as hub:
            expected = complete if step == "committed" else before
            assert _state(hub, "acme/r") == expected, f"a kill at {step} left a partial commit"
            hub.gc(grace_seconds=0)
            assert _orphans(hub) == set() and hub.verify() == {"missing": [], "corrupt": []}
