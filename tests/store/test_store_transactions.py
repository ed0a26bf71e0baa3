"""``Catalog.transaction()``: the writes of one operation become visible together, or not at all.

Every case runs on SQLite and PostgreSQL. What is visible is checked from a second ``Catalog`` on
the same database (another connection, as another process would read it) and by counting the rows
of every table, so nothing half-written can hide behind the reading API.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

import adapterhub
from adapterhub.errors import AdapterExistsError, AdapterNotFoundError, RevisionNotFoundError
from adapterhub.store import AdapterRecord, Catalog, LineageRecord, RevisionFileRecord, hub_catalog
from adapterhub.store.writer import CatalogWriter
from tests.helpers import fake_digest

MakeRecord = Callable[..., AdapterRecord]
TABLES = ("adapters", "adapter_tags", "adapter_revisions", "lineage", "metrics", "revision_files")


def row_counts(catalog: Catalog) -> dict[str, int]:
    with catalog.engine.connect() as conn:
        return {table: conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one() for table in TABLES}


def visible(catalog: Catalog) -> dict[str, Any]:
    """Everything a reader can see, entry by entry, plus the row count of every table."""
    state: dict[str, Any] = {"rows": row_counts(catalog)}
    for name in catalog.names():
        revisions = catalog.revisions(name)
        state[name] = {
            "record": catalog.get(name),
            "lineage": catalog.lineage(name),
            "metrics": catalog.metrics(name),
            "revisions": revisions,
            "files": {r.revision: set(hub_catalog.revision_files(catalog, name, r.revision)) for r in revisions},
        }
    return state


@pytest.fixture
def observer(db_url: str, catalog: Catalog) -> Iterator[Catalog]:
    """A second catalog on the same database: what other connections see."""
    other = Catalog(db_url)
    yield other
    other.close()


class Injected(RuntimeError):
    pass


FILES = [RevisionFileRecord("README.md", fake_digest("readme"), 12), RevisionFileRecord("notes/a.json", fake_digest("a"), 3)]


def one_operation(tx: CatalogWriter, make_record: MakeRecord, fail_after: int | None = None) -> list[str]:
    """Every kind of write, in the order a hub commit makes them; raise after ``fail_after`` steps."""
    steps: list[Callable[[], object]] = [
        lambda: tx.add(make_record("acme/new"), [LineageRecord(parent_name="acme/old", operation="merge:linear")]),
        lambda: tx.add_metric("acme/new", task="t", split="test", metric="accuracy", value=0.75),
        lambda: tx.add_revision_files("acme/new", tx.get("acme/new").revision or "", FILES[:1]),
        lambda: tx.add_revision("acme/old", digest=fake_digest("old-v2"), size=7, config={"r": 2}, message="v2", rank=2),
        lambda: tx.add_revision_files("acme/old", tx.get("acme/old").revision or "", FILES),
        lambda: tx.update("acme/old", tags=["v2"], task="chat", description="second"),
        lambda: tx.add_metric("acme/old", task="t", split="test", metric="accuracy", value=0.5, extra={"n": 3}),
    ]
    done = []
    for i, step in enumerate(steps):
        if fail_after is not None and i == fail_after:
            raise Injected(f"after {i} steps")
        step()
        done.append(str(i))
    if fail_after is not None:
        raise Injected("after every step")
    return done


def test_writes_of_one_transaction_become_visible_together(
    catalog: Catalog, observer: Catalog, make_record: MakeRecord
) -> None:
    catalog.add(make_record("acme/old", tags=["v1"]))
    before = visible(observer)
    with catalog.transaction() as tx:
        one_operation(tx, make_record)
        # Inside: the transaction sees its own writes, through the writer and through the catalog.
        assert tx.exists("acme/new") and catalog.exists("acme/new")
        assert [m.value for m in catalog.metrics("acme/new")] == [0.75]
        assert catalog.get("acme/old").tags == ("v2",) and len(catalog.revisions("acme/old")) == 2
        # Outside (another connection): nothing yet.
        assert visible(observer) == before
    after = visible(observer)
    assert after["rows"] == {
        "adapters": 2, "adapter_tags": 2, "adapter_revisions": 3, "lineage": 1, "metrics": 2, "revision_files": 3,
    }  # fmt: skip
    new, old = after["acme/new"], after["acme/old"]
    assert [p.parent_name for p in new["lineage"]] == ["acme/old"]
    assert [m.metric for m in new["metrics"]] == ["accuracy"]
    assert new["files"] == {new["record"].revision: set(FILES[:1])}
    assert old["record"].digest == fake_digest("old-v2") and old["record"].rank == 2
    assert (old["record"].tags, old["record"].task, old["record"].description) == (("v2",), "chat", "second")
    assert old["files"] == {old["record"].revision: set(FILES), old["revisions"][1].revision: set()}
    assert [(m.value, m.extra) for m in old["metrics"]] == [(0.5, {"n": 3})]


@pytest.mark.parametrize("fail_after", range(8))
def test_an_exception_leaves_none_of_the_writes(
    catalog: Catalog, observer: Catalog, make_record: MakeRecord, fail_after: int
) -> None:
    catalog.add(make_record("acme/old", tags=["v1"]))
    catalog.add_metric("acme/old", task="t", split="test", metric="accuracy", value=0.25)
    before = visible(observer)
    with pytest.raises(Injected):
        with catalog.transaction() as tx:
            one_operation(tx, make_record, fail_after=fail_after)
    assert visible(observer) == before
    assert visible(catalog) == before
    catalog.add_metric("acme/old", task="t", split="test", metric="after", value=1.0)  # nothing is left locked


def test_reads_from_other_threads_do_not_see_an_open_transaction(catalog: Catalog, make_record: MakeRecord) -> None:
    seen: list[bool] = []
    with catalog.transaction() as tx:
        tx.add(make_record("acme/a"))
        thread = threading.Thread(target=lambda: seen.append(catalog.exists("acme/a")))
        thread.start()
        thread.join(timeout=60)
        assert catalog.exists("acme/a")  # this thread: inside the transaction
    assert seen == [False] and catalog.exists("acme/a")


def test_a_failed_write_inside_leaves_the_transaction_usable(catalog: Catalog, make_record: MakeRecord) -> None:
    catalog.add(make_record("acme/a"))
    with catalog.transaction() as tx:
        with pytest.raises(AdapterExistsError):
            tx.add(make_record("acme/a", digest=fake_digest("other")))
        with pytest.raises(AdapterNotFoundError):
            tx.add_metric("acme/none", task="t", split="s", metric="m", value=1.0)
        with pytest.raises(RevisionNotFoundError):
            tx.add_revision_files("acme/a", "0" * 40, FILES)
        tx.add_metric("acme/a", task="t", split="s", metric="m", value=1.0)
    assert catalog.get("acme/a").digest == fake_digest("acme/a")
    assert [m.metric for m in catalog.metrics("acme/a")] == ["m"]
    assert row_counts(catalog)["revision_files"] == 0


def test_nested_transactions_are_savepoints(catalog: Catalog, make_record: MakeRecord) -> None:
    with catalog.transaction() as tx:
        tx.add(make_record("acme/kept"))
        with pytest.raises(Injected):
            with catalog.transaction() as inner:
                assert inner is tx
                inner.add(make_record("acme/dropped"))
                catalog.add_metric("acme/kept", task="t", split="s", metric="dropped", value=1.0)  # joins it
                raise Injected("inner only")
        catalog.add_metric("acme/kept", task="t", split="s", metric="kept", value=2.0)  # one-shot call joins
        hub_catalog.add_revision_files(catalog, "acme/kept", tx.get("acme/kept").revision or "", FILES[:1])
    assert catalog.names() == ["acme/kept"]
    assert [m.metric for m in catalog.metrics("acme/kept")] == ["kept"]
    assert hub_catalog.revision_files(catalog, "acme/kept", catalog.get("acme/kept").revision or "") == FILES[:1]


def test_one_call_methods_are_one_transaction_each(catalog: Catalog, make_record: MakeRecord) -> None:
    stored = catalog.add(make_record("acme/a"))
    revision = catalog.add_revision("acme/a", digest=fake_digest("v2"), size=1, config={}, message="v2")
    hub_catalog.add_revision_files(catalog, "acme/a", revision, FILES)
    catalog.add_metric("acme/a", task="t", split="s", metric="m", value=1.0)
    assert catalog.update("acme/a", task="x").task == "x"
    assert [r.revision for r in catalog.revisions("acme/a")] == [revision, stored.revision]
    assert set(hub_catalog.revision_files(catalog, "acme/a", revision)) == set(FILES)
    assert catalog.remove("acme/a").task == "x"
    assert row_counts(catalog) == dict.fromkeys(TABLES, 0)  # revision files go with their revision


KILLED_WRITER = r"""
import hashlib, os, signal, sys
from pathlib import Path
from adapterhub.store import AdapterRecord, Catalog, RevisionFileRecord

url, ready = sys.argv[1], Path(sys.argv[2])
d = lambda s: hashlib.sha256(s.encode()).hexdigest()
catalog = Catalog(url)
with catalog.transaction() as tx:
    tx.add(AdapterRecord(name="acme/killed", digest=d("k"), size=1, rank=2, alpha=4.0, target_modules=["q"], config={}))
    tx.add_metric("acme/killed", task="t", split="s", metric="m", value=1.0)
    revision = tx.add_revision("acme/old", digest=d("v2"), size=2, config={}, message="v2")
    tx.add_revision_files("acme/old", revision, [RevisionFileRecord("README.md", d("r"), 5)])
    ready.touch()
    os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.slow
def test_a_killed_process_leaves_none_of_its_writes(db_url: str, tmp_path: Path, make_record: MakeRecord) -> None:
    with Catalog(db_url) as catalog:
        catalog.add(make_record("acme/old"))
        before = visible(catalog)
    script = tmp_path / "writer.py"
    script.write_text(KILLED_WRITER)
    repo_root = str(Path(adapterhub.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [repo_root, os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(
        [sys.executable, str(script), db_url, str(tmp_path / "ready")], env=env, capture_output=True, timeout=120
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    assert (tmp_path / "ready").exists(), "the writer died before it wrote everything"
    with Catalog(db_url) as catalog:
        assert visible(catalog) == before
        # Nothing is left locked (PostgreSQL ends the dead client's transaction when its socket closes).
        catalog.add_metric("acme/old", task="t", split="s", metric="after", value=1.0)
