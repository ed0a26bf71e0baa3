"""The head of an entry moves by compare-and-set in the database (issue 9, item 11), seen from the store:
two catalogs (as two server processes have) build on the same head at once; exactly one wins, the
other gets ``CommitConflictError`` and nothing of it is written."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from adapterhub.errors import CommitConflictError
from adapterhub.store import AdapterRecord, Catalog
from tests.helpers import fake_digest, postgres_database


def _race_on_one_head(url: str, n: int = 6) -> None:
    catalogs = [Catalog(url) for _ in range(n)]  # one engine each: separate connections, like processes
    try:
        record = AdapterRecord(
            name="acme/a", digest=fake_digest("v1"), size=1, rank=2, alpha=4.0, target_modules=("q",), config={}
        )
        base = catalogs[0].add(record)
        barrier = threading.Barrier(n)
        outcomes: list[object] = [None] * n

        def build(i: int) -> None:
            head = catalogs[i].get("acme/a").revision
            barrier.wait()
            try:
                outcomes[i] = catalogs[i].add_revision(
                    "acme/a", digest=fake_digest(f"v2-{i}"), size=2, config={}, message=f"m{i}", expected_head=head
                )
            except CommitConflictError as e:
                outcomes[i] = e

        threads = [threading.Thread(target=build, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        won = [o for o in outcomes if isinstance(o, str)]
        assert len(won) == 1 and all(isinstance(o, CommitConflictError) for o in outcomes if o not in won)
        revisions = catalogs[0].revisions("acme/a")
        assert [r.revision for r in revisions] == [won[0], base.revision]  # the losers wrote nothing
        assert revisions[0].parent_revision == base.revision
        assert catalogs[0].get("acme/a").revision == won[0]
        # a stale expected head is refused later too; None appends to whatever the head is (pull, tools)
        v3 = {"digest": fake_digest("v3"), "size": 3, "config": {}, "message": "m"}
        with pytest.raises(CommitConflictError):
            catalogs[1].add_revision("acme/a", **v3, expected_head=base.revision)
        third = catalogs[1].add_revision("acme/a", **v3)
        assert catalogs[0].get_revision("acme/a").parent_revision == won[0]
        assert catalogs[0].get("acme/a").revision == third
    finally:
        for catalog in catalogs:
            catalog.close()


def test_one_of_concurrent_revisions_on_one_head_wins_on_sqlite(tmp_path: Path):
    _race_on_one_head(f"sqlite:///{tmp_path / 'catalog.db'}")


@pytest.mark.postgres
def test_one_of_concurrent_revisions_on_one_head_wins_on_postgresql(postgres_admin):
    with postgres_database(postgres_admin) as url:
        _race_on_one_head(url)
