"""Catalog behaviour on SQLite and PostgreSQL: add/get/list/remove, lineage, revisions, metrics."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select

from adapterhub.errors import (
    AdapterExistsError,
    AdapterNotFoundError,
    InvalidNameError,
    InvalidParameterError,
    RevisionNotFoundError,
)
from adapterhub.store import AdapterRecord, Catalog, LineageRecord, make_revision_id
from adapterhub.store.orm import Adapter, AdapterRevision, AdapterTag, Lineage, Metric
from tests.helpers import fake_digest

MakeRecord = Callable[..., AdapterRecord]
HEX40 = re.compile(r"[0-9a-f]{40}")


def row_counts(catalog: Catalog) -> dict[str, int]:
    with catalog.engine.connect() as conn:
        return {
            model.__tablename__: conn.scalar(select(func.count()).select_from(model))
            for model in (Adapter, AdapterTag, AdapterRevision, Lineage, Metric)
        }


def test_add_get_roundtrip(catalog: Catalog, make_record: MakeRecord) -> None:
    record = make_record(
        "acme/sql-lora",
        task="text-to-sql",
        tags=["sql", " lora ", "sql", ""],
        description="Turns questions into SQL.",
        ranks={"model.layers.0.q_proj": 4, "model.layers.0.v_proj": 8},
        source_repo="org/sql-lora",
        source_revision="a" * 40,
        config={"r": 8, "lora_alpha": 16, "nested": {"x": [1, 2.5, None]}, "unknown_peft_key": True},
    )
    before = datetime.now(timezone.utc)
    stored = catalog.add(record)
    after = datetime.now(timezone.utc)

    assert stored.tags == ("sql", "lora")  # stripped, de-duplicated, order kept
    assert stored.created is not None and before <= stored.created <= after
    assert stored.created.tzinfo is not None and stored.created.utcoffset() == timedelta(0)
    assert stored.revision is not None and HEX40.fullmatch(stored.revision)
    assert stored.revision == make_revision_id(
        name=record.name,
        parent_revision=None,
        digest=record.digest,
        config=record.config,
        message="add",
        created=stored.created,
    )
    fetched = catalog.get("acme/sql-lora")
    assert fetched == stored
    assert catalog.exists("acme/sql-lora") and not catalog.exists("acme/other")

    as_dict = fetched.to_dict()
    assert json.loads(json.dumps(as_dict)) == as_dict
    assert as_dict["created"] == stored.created.isoformat() and as_dict["tags"] == ["sql", "lora"]
    assert AdapterRecord.from_dict(as_dict) == fetched


def test_add_keeps_given_created(catalog: Catalog, make_record: MakeRecord) -> None:
    created = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=timezone(timedelta(hours=2)))
    stored = catalog.add(make_record("acme/old", created=created))
    assert catalog.get("acme/old").created == created == stored.created
    with pytest.raises(InvalidParameterError, match="timezone"):
        catalog.add(make_record("acme/naive", created=datetime(2024, 1, 1)))


def test_duplicate_name_is_rejected_and_nothing_changes(catalog: Catalog, make_record: MakeRecord) -> None:
    catalog.add(make_record("acme/a"), [LineageRecord(parent_name="x/y", operation="import")])
    before = row_counts(catalog)
    with pytest.raises(AdapterExistsError) as info:
        catalog.add(make_record("acme/a", digest=fake_digest("other")), [LineageRecord(parent_name="p/q", operation="merge:linear")])
    assert info.value.name == "acme/a" and "acme/a" in str(info.value)
    assert row_counts(catalog) == before
    assert catalog.get("acme/a").digest == fake_digest("acme/a")


@pytest.mark.parametrize("name", ["noslash", "a/b/c", "/b", "a/", "", "/"])
def test_invalid_names(catalog: Catalog, make_record: MakeRecord, name: str) -> None:
    with pytest.raises(InvalidNameError):
        catalog.add(make_record(name))


def test_invalid_fields(catalog: Catalog, make_record: MakeRecord) -> None:
    with pytest.raises(InvalidParameterError):
        catalog.add(make_record("acme/a", digest="not-a-digest"))
    with pytest.raises(InvalidParameterError):
        catalog.add(make_record("acme/a", size=-1))
    with pytest.raises(InvalidParameterError):
        catalog.add(make_record("acme/a", tags=["x" * 300]))
    assert row_counts(catalog)["adapters"] == 0


def test_get_missing(catalog: Catalog) -> None:
    with pytest.raises(AdapterNotFoundError) as info:
        catalog.get("acme/missing")
    assert isinstance(info.value, LookupError) and "acme/missing" in str(info.value)
    for call in (catalog.remove, catalog.lineage, catalog.revisions, catalog.metrics):
        with pytest.raises(AdapterNotFoundError):
            call("acme/missing")


LIST_FIXTURES = [
    dict(name="acme/sql-lora", base_model="llama", task="text-to-sql", tags=["sql", "prod"], description="SQL queries"),
    dict(name="acme/chat", base_model="llama", task="chat", tags=["prod"], description="Friendly assistant"),
    dict(name="zeta/Translate", base_model="mistral", task="translation", tags=["mt"], description="German to English"),
    dict(name="beta/under_score", base_model=None, task=None, tags=[], description="100% literal"),
    dict(name="beta/sql-helper", base_model="mistral", task="text-to-sql", tags=["SQL-Beta"], description=""),
    dict(name="acme/mixed", base_model="llama", task="chat", tags=["sql"], description="has sql tag only"),
]


def _reference(records: list[AdapterRecord], base_model=None, task=None, tag=None, query=None) -> list[str]:  # type: ignore[no-untyped-def]
    """Independent Python filter that defines what ``list`` must return."""
    out = []
    for r in records:
        if base_model is not None and r.base_model != base_model:
            continue
        if task is not None and r.task != task:
            continue
        if tag is not None and tag not in r.tags:
            continue
        if query:
            q = query.lower()
            haystack = [r.name, r.task or "", r.description, *r.tags]
            if not any(q in h.lower() for h in haystack):
                continue
        out.append(r.name)
    return sorted(out)


@pytest.mark.parametrize(
    "filters",
    [
        {},
        {"base_model": "llama"},
        {"base_model": "none/such"},
        {"task": "text-to-sql"},
        {"tag": "prod"},
        {"tag": "sql"},
        {"tag": "SQL"},  # tags are exact
        {"query": "SQL"},  # name, task, description and tags, case-insensitive
        {"query": "translate"},
        {"query": "german"},
        {"query": "sql-beta"},
        {"query": "_"},  # LIKE wildcards are literal
        {"query": "%"},
        {"query": "zzz"},
        {"base_model": "llama", "tag": "sql", "query": "mixed"},
        {"task": "chat", "tag": "prod"},
    ],
)
def test_list_filters(catalog: Catalog, make_record: MakeRecord, filters: dict) -> None:  # type: ignore[type-arg]
    records = [catalog.add(make_record(**fields)) for fields in LIST_FIXTURES]
    expected = _reference(records, **filters)
    got = catalog.list(**filters)
    assert [r.name for r in got] == expected
    assert catalog.count(**filters) == len(expected)
    by_name = {r.name: r for r in records}
    assert all(r == by_name[r.name] for r in got)


def test_list_paging(catalog: Catalog, make_record: MakeRecord) -> None:
    names = sorted(f"ns/a{i:02d}" for i in range(12))
    catalog.bulk_add(make_record(n) for n in reversed(names))
    assert [r.name for r in catalog.list()] == names == catalog.names()
    assert [r.name for r in catalog.list(limit=5)] == names[:5]
    assert [r.name for r in catalog.list(limit=5, offset=10)] == names[10:]
    assert [r.name for r in catalog.list(offset=3)] == names[3:]
    assert catalog.list(limit=0) == []
    with pytest.raises(InvalidParameterError):
        catalog.list(offset=-1)


def test_empty_catalog(catalog: Catalog) -> None:
    assert catalog.list() == [] and catalog.count() == 0 and catalog.referenced_digests() == set()


def test_remove_cascades(catalog: Catalog, make_record: MakeRecord) -> None:
    parent = catalog.add(make_record("acme/parent", tags=["a", "b"]))
    child = catalog.add(
        make_record("acme/child", tags=["c"]),
        [LineageRecord(parent_name="acme/parent", parent_digest=parent.digest, operation="merge:lego")],
    )
    catalog.add_revision("acme/parent", digest=fake_digest("v2"), size=5, config={}, message="update")
    catalog.add_metric("acme/parent", task="t", split="test", metric="accuracy", value=0.5)
    catalog.add_metric("acme/child", task="t", split="test", metric="accuracy", value=0.7)

    removed = catalog.remove("acme/parent")
    assert removed.name == "acme/parent" and removed.digest == fake_digest("v2")
    assert not catalog.exists("acme/parent")
    # Only the child's rows are left: 1 adapter, 1 tag, 1 revision, 1 lineage row, 1 metric.
    assert row_counts(catalog) == {"adapters": 1, "adapter_tags": 1, "adapter_revisions": 1, "lineage": 1, "metrics": 1}
    # The child's record of its parent survives the parent's removal.
    assert [(r.parent_name, r.child_name) for r in catalog.descendants("acme/parent")] == [("acme/parent", child.name)]
    assert catalog.lineage("acme/child")[0].parent_digest == parent.digest

    catalog.remove("acme/child")
    assert all(n == 0 for n in row_counts(catalog).values())
    with pytest.raises(AdapterNotFoundError):
        catalog.remove("acme/child")


def test_lineage_and_descendants(catalog: Catalog, make_record: MakeRecord) -> None:
    a = catalog.add(make_record("acme/a"))
    b = catalog.add(make_record("acme/b"))
    parents = [
        LineageRecord(parent_name="acme/b", parent_digest=b.digest, operation="merge:lego", params={"k": 8}, weight=0.25),
        LineageRecord(parent_name="acme/a", parent_digest=a.digest, operation="merge:lego", params={"k": 8}, weight=0.75),
    ]
    catalog.add(make_record("acme/ab"), parents)
    catalog.add(make_record("acme/a2"), [LineageRecord(parent_name="acme/a", operation="merge:svd", position=3)])
    catalog.add(make_record("org/pulled"), [LineageRecord(parent_name="hf:org/pulled", operation="pull")])

    lineage = catalog.lineage("acme/ab")
    assert [(r.parent_name, r.weight, r.position, r.params) for r in lineage] == [
        ("acme/b", 0.25, 0, {"k": 8}),
        ("acme/a", 0.75, 1, {"k": 8}),
    ]
    assert all(r.child_name == "acme/ab" and r.operation == "merge:lego" for r in lineage)
    assert catalog.lineage("acme/a") == []
    assert [(r.child_name, r.operation, r.position) for r in catalog.descendants("acme/a")] == [
        ("acme/a2", "merge:svd", 3),
        ("acme/ab", "merge:lego", 1),
    ]
    assert catalog.descendants("acme/ab") == [] and catalog.descendants("nobody/here") == []
    assert json.loads(json.dumps([r.to_dict() for r in lineage]))[0]["parent_name"] == "acme/b"


def test_revisions(catalog: Catalog, make_record: MakeRecord) -> None:
    first = catalog.add(make_record("acme/a", source_revision="s1"))
    config2 = {"r": 4, "lora_alpha": 8}
    rev2 = catalog.add_revision(
        "acme/a", digest=fake_digest("v2"), size=22, config=config2, message="pull s2", source_revision="s2", rank=4, alpha=8.0
    )
    rev3 = catalog.add_revision("acme/a", digest=fake_digest("v3"), size=33, config={"r": 4}, message="pull s3", ranks={"x": 2})
    assert len({first.revision, rev2, rev3}) == 3 and all(HEX40.fullmatch(r) for r in (rev2, rev3))

    revisions = catalog.revisions("acme/a")
    assert [r.revision for r in revisions] == [rev3, rev2, first.revision]  # newest first
    assert [r.parent_revision for r in revisions] == [rev2, first.revision, None]
    assert [r.digest for r in revisions] == [fake_digest("v3"), fake_digest("v2"), first.digest]
    assert [r.source_revision for r in revisions] == [None, "s2", "s1"]
    # Every id can be recomputed from what is stored: the chain is verifiable.
    for r in revisions:
        assert r.revision == make_revision_id(
            name="acme/a", parent_revision=r.parent_revision, digest=r.digest, config=r.config, message=r.message, created=r.created
        )

    head = catalog.get("acme/a")
    assert (head.revision, head.digest, head.size, head.config) == (rev3, fake_digest("v3"), 33, {"r": 4})
    assert (head.rank, head.alpha, head.ranks) == (4, 8.0, {"x": 2})  # overrides from rev2 and rev3 stick
    assert head.created == first.created  # the entry's creation time does not move

    for alias in (None, "main", "HEAD"):
        assert catalog.get_revision("acme/a", alias).revision == rev3
    assert catalog.get_revision("acme/a", rev2).digest == fake_digest("v2")
    assert catalog.get_revision("acme/a", rev2[:7].upper()).revision == rev2
    for bad in ("0" * 40, rev2[:6], "not-hex-at-all", "../main"):
        with pytest.raises(RevisionNotFoundError):
            catalog.get_revision("acme/a", bad)
    with pytest.raises(AdapterNotFoundError):
        catalog.add_revision("acme/none", digest=fake_digest("x"), size=1, config={}, message="m")


def test_digest_references(catalog: Catalog, make_record: MakeRecord) -> None:
    shared = fake_digest("shared")
    catalog.add(make_record("acme/a", digest=shared))
    catalog.add(make_record("acme/b", digest=shared))
    catalog.add_revision("acme/b", digest=fake_digest("b2"), size=1, config={}, message="m")
    assert catalog.referenced_digests() == {shared, fake_digest("b2")}
    catalog.remove("acme/a")
    assert catalog.digest_in_use(shared)  # still an old revision of acme/b
    catalog.remove("acme/b")
    assert not catalog.digest_in_use(shared) and catalog.referenced_digests() == set()
    with pytest.raises(InvalidParameterError):
        catalog.digest_in_use("../x")


def test_metrics(catalog: Catalog, make_record: MakeRecord) -> None:
    catalog.add(make_record("acme/a"))
    m1 = catalog.add_metric("acme/a", task="chatterbot/science", split="test", metric="accuracy", value=0.8125)
    catalog.add_metric("acme/a", task="chatterbot/science", split="test", metric="retained_gain", value=-0.5, extra={"seeds": [0, 1]})
    got = catalog.metrics("acme/a")
    assert [(m.metric, m.value, m.extra) for m in got] == [("accuracy", 0.8125, None), ("retained_gain", -0.5, {"seeds": [0, 1]})]
    assert got[0] == m1 and got[0].created is not None and got[0].created.tzinfo is not None
    for bad in (float("nan"), float("inf")):
        with pytest.raises(InvalidParameterError):
            catalog.add_metric("acme/a", task="t", split="s", metric="m", value=bad)
    with pytest.raises(AdapterNotFoundError):
        catalog.add_metric("acme/none", task="t", split="s", metric="m", value=1.0)


def test_update(catalog: Catalog, make_record: MakeRecord) -> None:
    catalog.add(make_record("acme/a", tags=["old", "keep"], task="chat", description="before"))
    updated = catalog.update("acme/a", tags=["keep", "new", "new"])
    assert updated.tags == ("keep", "new") and updated.task == "chat" and updated.description == "before"
    assert [r.name for r in catalog.list(tag="new")] == ["acme/a"] and catalog.list(tag="old") == []
    assert catalog.get("acme/a") == updated
    updated = catalog.update("acme/a", task="", description="after")
    assert updated.task is None and updated.description == "after" and updated.tags == ("keep", "new")
    assert catalog.update("acme/a", tags=[]).tags == () and catalog.list(tag="keep") == []
    assert catalog.get("acme/a").revision == updated.revision  # metadata edits are not new content
    with pytest.raises(AdapterNotFoundError):
        catalog.update("acme/none", task="x")


def test_bulk_add_duplicate_adds_nothing(catalog: Catalog, make_record: MakeRecord) -> None:
    catalog.add(make_record("acme/b"))
    with pytest.raises(AdapterExistsError):
        catalog.bulk_add([make_record("acme/a"), make_record("acme/b"), make_record("acme/c")])
    assert catalog.names() == ["acme/b"]
    with pytest.raises(AdapterExistsError):  # a name twice in the input
        catalog.bulk_add([make_record("acme/x"), make_record("acme/x")])
    assert catalog.names() == ["acme/b"]


def test_config_must_be_plain_json(catalog: Catalog, make_record: MakeRecord) -> None:
    with pytest.raises(InvalidParameterError, match="plain JSON"):
        catalog.add(make_record("acme/nan", config={"r": float("nan")}))
    assert not catalog.exists("acme/nan")


def test_second_catalog_sees_writes(db_url: str, make_record: MakeRecord) -> None:
    with Catalog(db_url) as one, Catalog(db_url) as two:
        one.add(make_record("acme/a"))
        assert two.get("acme/a") == one.get("acme/a")
        with pytest.raises(AdapterExistsError):
            two.add(make_record("acme/a"))


def test_in_memory_sqlite(make_record: MakeRecord) -> None:
    with Catalog("sqlite://") as catalog:
        catalog.add(make_record("acme/a"))
        assert [r.name for r in catalog.list()] == ["acme/a"]


def test_repr_hides_password() -> None:
    catalog = Catalog("postgresql+psycopg://user:secret@127.0.0.1:1/db", migrate=False)
    assert "secret" not in repr(catalog)
    catalog.close()
