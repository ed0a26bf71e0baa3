"""Keyset pages of the catalog (``store/paging.py``) on SQLite and PostgreSQL: every row once, in
order, with filters, across concurrent inserts; strict cursors; the PostgreSQL search indices."""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest
from sqlalchemy import text

from adapterhub.errors import InvalidParameterError
from adapterhub.store import AdapterRecord, Catalog, hub_catalog
from adapterhub.store.paging import decode_cursor, encode_cursor, list_page, repo_page
from adapterhub.store.reads import AdapterFilter

MakeRecord = Callable[..., AdapterRecord]


def _fill(catalog: Catalog, make_record: MakeRecord, n: int) -> list[str]:
    records = [
        make_record(
            f"team{i % 3}/adapter-{i:04d}",
            task=f"task-{i % 4}",
            tags=[f"t{i % 5}", "lora"],
            base_model="base/a" if i % 2 else "base/b",
            description=f"adapter {i} does {'sql' if i % 7 == 0 else 'chat'}",
        )
        for i in range(n)
    ]
    catalog.bulk_add(records)
    return sorted(r.name for r in records)


def _walk(catalog: Catalog, where: AdapterFilter, limit: int) -> list[str]:
    seen: list[str] = []
    cursor = None
    while True:
        with catalog.reading() as reader:
            page = list_page(reader, where, limit=limit, cursor=cursor)
        assert len(page.items) <= limit
        seen.extend(r.name for r in page.items)
        if page.next_cursor is None:
            return seen
        assert len(page.items) == limit
        cursor = page.next_cursor


def test_cursor_pages_visit_every_row_once_in_order(catalog: Catalog, make_record: MakeRecord) -> None:
    names = _fill(catalog, make_record, 53)
    assert names == [r.name for r in catalog.list()]
    for limit in (1, 7, 53, 100):
        assert _walk(catalog, AdapterFilter(), limit) == names
    with catalog.reading() as reader:
        assert list_page(reader, AdapterFilter(task="nothing"), limit=5).items == []


@pytest.mark.parametrize(
    "where",
    [
        AdapterFilter(task="task-1"),
        AdapterFilter(base_model="base/a"),
        AdapterFilter(tag="t3"),
        AdapterFilter(query="SQL"),
        AdapterFilter(query="team1/"),
        AdapterFilter(query="t4"),  # a tag only
        AdapterFilter(task="task-2", tag="t0", query="chat"),
    ],
)
def test_filters_with_cursor_match_the_full_listing(
    catalog: Catalog, make_record: MakeRecord, where: AdapterFilter
) -> None:
    _fill(catalog, make_record, 40)
    expected = [
        r.name
        for r in catalog.list(base_model=where.base_model, task=where.task, tag=where.tag, query=where.query)
    ]
    assert expected  # each filter selects something
    assert _walk(catalog, where, 3) == expected


def test_free_text_is_exact_on_every_field(catalog: Catalog, make_record: MakeRecord) -> None:
    """The PostgreSQL shortcut (one ILIKE on the fields joined by newlines) answers as the per-field test."""
    catalog.bulk_add(
        [
            make_record("ns/plain", task="chat", description="line one\nline two", tags=["Café", 'quo"te', "x%y"]),
            make_record("ns/other", task="sql", description="nothing", tags=["lora"]),
        ]
    )
    cases = {
        "CAFé": ["ns/plain"], 'o"t': ["ns/plain"], "x%y": ["ns/plain"], "%": ["ns/plain"], "_": [],
        "line one\nline": ["ns/plain"], "two\ncafé": [],  # a newline never spans two fields
        "chat\nline": [], "ns/": ["ns/other", "ns/plain"], "sql": ["ns/other"], "lora": ["ns/other"],
    }
    for query, expected in cases.items():
        assert _walk(catalog, AdapterFilter(query=query), 1) == expected, query
        assert [r.name for r in catalog.list(query=query)] == expected, query


def test_text_pages_past_a_window_without_matches(
    catalog: Catalog, make_record: MakeRecord, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Matches clustered late in name order: the window holds none, the rest comes from the index."""
    from adapterhub.store import paging

    monkeypatch.setattr(paging, "TEXT_WINDOW", 5)
    monkeypatch.setattr(paging, "TEXT_DIRECT", -1)  # never straight to the index: the window first
    catalog.bulk_add(
        [make_record(f"aaa/x{i:02d}") for i in range(20)] + [make_record(f"zzz/needle{i:02d}") for i in range(7)]
        + [make_record(f"mmm/y{i:02d}", description="a needle here") for i in range(2)]
    )
    expected = ["mmm/y00", "mmm/y01", *(f"zzz/needle{i:02d}" for i in range(7))]
    for limit in (1, 3, 4, 9, 50):
        assert _walk(catalog, AdapterFilter(query="NEEDLE"), limit) == expected
    assert _walk(catalog, AdapterFilter(query="needle", tag="lora"), 2) == expected
    seen, cursor = [], None  # the hub listing's search takes the same path
    while True:
        with catalog.reading() as reader:
            rows, cursor = repo_page(reader, search="NEEDLE", limit=2, cursor=cursor)
        seen += [r.name for r in rows]
        if cursor is None:
            break
    assert seen == [f"zzz/needle{i:02d}" for i in range(7)]  # the id only, not the description


def test_concurrent_inserts_never_repeat_or_skip_existing_rows(catalog: Catalog, make_record: MakeRecord) -> None:
    names = _fill(catalog, make_record, 30)
    seen: list[str] = []
    cursor = None
    added: list[str] = []
    while True:
        with catalog.reading() as reader:
            page = list_page(reader, AdapterFilter(), limit=4, cursor=cursor)
        seen.extend(r.name for r in page.items)
        # between pages another writer adds rows before and after the current position
        for name in (f"team0/a-new-{len(added)}", f"zzz/new-{len(added)}"):
            catalog.add(make_record(name))
            added.append(name)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert len(seen) == len(set(seen)), "a row was listed twice"
    assert set(names) <= set(seen), "a row that existed before the first page was skipped"
    assert seen == sorted(seen)
    assert [n for n in seen if n.startswith("zzz/")]  # rows added ahead of the position do appear


@pytest.mark.parametrize(
    "token",
    [
        "",
        "!!!!",
        "abc",  # too short
        "x" * 700,  # too long
        base64.urlsafe_b64encode(b"2:acme/a").decode().rstrip("="),  # unknown version
        base64.urlsafe_b64encode(b"1:").decode().rstrip("="),  # no name
        base64.urlsafe_b64encode(b"1:\xff\xfe").decode().rstrip("="),  # not UTF-8
        base64.urlsafe_b64encode(b"1:a\nb").decode().rstrip("="),  # a control character
        base64.urlsafe_b64encode(b"1:acme/a").decode(),  # padded: not the canonical spelling
        encode_cursor("acme/a")[:-1] + "B",  # stray low bits
    ],
)
def test_bad_cursors_are_invalid_parameters(token: str) -> None:
    with pytest.raises(InvalidParameterError, match="cursor"):
        decode_cursor(token)


def test_cursor_round_trip_and_bad_limit(catalog: Catalog) -> None:
    for name in ("acme/a", "ümlaut/ß-λ", "x/" + "y" * 250):
        assert decode_cursor(encode_cursor(name)) == name
    with catalog.reading() as reader:
        for limit in (0, -1, 10**9):
            with pytest.raises(InvalidParameterError, match="limit"):
                list_page(reader, AdapterFilter(), limit=limit)


def test_repo_pages_merge_adapters_and_empty_repos(catalog: Catalog, make_record: MakeRecord) -> None:
    names = _fill(catalog, make_record, 12)
    for name, private in (("team0/aaa-empty", True), ("team2/zzz-empty", False), ("team1/adapter-0004", True)):
        hub_catalog.create_repo(catalog, name, private=private)
    expected = sorted({*names, "team0/aaa-empty", "team2/zzz-empty"})
    seen, cursor = [], None
    while True:
        with catalog.reading() as reader:
            rows, cursor = repo_page(reader, limit=5, cursor=cursor)
        seen.extend(rows)
        if cursor is None:
            break
    assert [r.name for r in seen] == expected
    by_name = {r.name: r for r in seen}
    assert by_name["team1/adapter-0004"].private and by_name["team0/aaa-empty"].private
    assert by_name["team0/aaa-empty"].revision is None and by_name["team2/zzz-empty"].tags == ("peft", "lora")
    assert "base_model:base/a" in by_name["team1/adapter-0001"].tags
    with catalog.reading() as reader:
        rows, _ = repo_page(reader, limit=100, author="team0", tags=["base_model:base/b", "peft"])
        assert [r.name for r in rows] == [n for n in names if n.startswith("team0/") and int(n[-4:]) % 2 == 0]
        rows, _ = repo_page(reader, limit=100, search="EMPTY")
        assert [r.name for r in rows] == ["team0/aaa-empty", "team2/zzz-empty"]
        rows, _ = repo_page(reader, limit=100, tags=["t1"])
        assert {r.name for r in rows} == {n for n in names if int(n[-4:]) % 5 == 1}


# -- PostgreSQL: the migration's indices, and that searches use them --------------------------------


@pytest.fixture
def pg_catalog(catalog: Catalog) -> Catalog:
    if not catalog.url.startswith("postgresql"):
        pytest.skip("PostgreSQL indices")
    return catalog


def test_postgres_migration_creates_the_search_indices(pg_catalog: Catalog) -> None:
    with pg_catalog.engine.connect() as conn:
        sql = "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'adapters'"
        indexes = dict(conn.execute(text(sql)).all())
    assert {"ix_adapters_task_name", "ix_adapters_base_model_name", "ix_adapters_search_trgm"} <= set(indexes)
    assert "gin_trgm_ops" in indexes["ix_adapters_search_trgm"] and "USING gin" in indexes["ix_adapters_search_trgm"]


def _plan(catalog: Catalog, where: AdapterFilter, cursor: str | None = None) -> str:
    clause, params = where.where("postgresql")
    if cursor is not None:
        clause += " AND a.name > :after" if clause else " WHERE a.name > :after"
        params["after"] = decode_cursor(cursor)
    sql = f"EXPLAIN SELECT a.name FROM adapters a{clause} ORDER BY a.name LIMIT 51"
    with catalog.engine.connect() as conn:
        return "\n".join(r[0] for r in conn.execute(text(sql), params))


def test_postgres_searches_use_indices(pg_catalog: Catalog, make_record: MakeRecord) -> None:
    records = [
        make_record(
            f"team{i % 50:02d}/adapter-{i:05d}",
            task=f"task-{i % 40}",
            tags=[f"t{i % 30}", "lora"],
            base_model=f"base/m{i % 20}",
            description=f"LoRA adapter {i} for task {i % 40}" + (" rare-needle" if i == 1234 else ""),
        )
        for i in range(4000)
    ]
    pg_catalog.bulk_add(records)
    with pg_catalog.engine.begin() as conn:
        conn.execute(text("ANALYZE"))
    searches = (AdapterFilter(query="rare-needle"), AdapterFilter(task="task-3"), AdapterFilter(base_model="base/m7"))
    for where in searches:
        plan = _plan(pg_catalog, where)
        assert "Seq Scan on adapters" not in plan, plan
        assert "Index" in plan, plan
    assert "ix_adapters_search_trgm" in _plan(pg_catalog, AdapterFilter(query="rare-needle"))
    assert "Seq Scan on adapters" not in _plan(pg_catalog, AdapterFilter(), encode_cursor("team25/adapter-02000"))
    with pg_catalog.reading() as reader:
        assert [r.name for r in list_page(reader, AdapterFilter(query="RARE-needle"), limit=5).items] == [
            "team34/adapter-01234"
        ]
