"""Keyset pages of the catalog: cursors, one page of adapters, one page of hub repos.

Why keyset and not OFFSET: ``OFFSET 500000`` makes the database read and throw away half a million
rows for every deep page, and a row inserted or deleted between two requests shifts every later
page (a row shown twice, or never). A page here is ``WHERE name > :after ORDER BY name LIMIT n+1``:
one range of the unique index on ``name`` (or of ``(task, name)`` / ``(base_model, name)`` when
those filter), as cheap on page 20,000 as on page 1. The name is unique, so it alone is a total
order; a row added while someone pages appears if it sorts after their position and never twice.

Why nothing counts: ``count(*)`` over a million rows costs a full index scan on every page. A page
says whether more follow (``next_cursor``); an exact total is a separate, optional call.

A cursor is an opaque, url-safe token (base64url of ``1:`` + the last name, without padding), so
clients never build one and the format can change with its version prefix. It is decoded
strictly: anything that is not exactly what ``encode_cursor`` makes is ``InvalidParameterError``
(HTTP 400, CLI exit 1), never a server error.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from adapterhub.errors import InvalidParameterError
from adapterhub.store.connections import Reader
from adapterhub.store.reads import SEARCH_TEXT, _SELECT_ADAPTERS, AdapterFilter, _fetch_adapters, as_utc, like_pattern
from adapterhub.store.records import AdapterRecord

__all__ = ["AdapterPage", "RepoRow", "MAX_PAGE", "decode_cursor", "encode_cursor", "list_page", "repo_page"]

# Rows tested in name order before a free-text page asks the trigram index (see _text_rows): a
# term in at least 1 row in 40 fills a 50-row page from the window (about 10 ms at 1M entries).
TEXT_WINDOW = 2000
# Below this many expected matches (the planner's estimate) the trigram index answers at once.
TEXT_DIRECT = 2000
MAX_PAGE = 10_000  # rows per page at most: one page is one response, held in memory whole
_VERSION = b"1:"
_TOKEN = re.compile(r"[A-Za-z0-9_-]{4,600}")
_ALWAYS_TAGS = ("peft", "lora")
_T = TypeVar("_T")  # every repo on this hub carries these (``list_models`` filter)


def encode_cursor(name: str) -> str:
    """The cursor that continues a listing after the row named ``name``."""
    return base64.urlsafe_b64encode(_VERSION + name.encode("utf-8")).rstrip(b"=").decode("ascii")


def decode_cursor(token: str) -> str:
    """The name a cursor continues after.

    Raises:
        InvalidParameterError: not a cursor this hub made (wrong alphabet, length, version or text).
    """
    bad = InvalidParameterError(f"invalid cursor {token[:60]!r}: pass back the next_cursor of a previous page")
    if not isinstance(token, str) or not _TOKEN.fullmatch(token):
        raise bad
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        name = raw[len(_VERSION) :].decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise bad from None
    if not raw.startswith(_VERSION) or not name or len(name) > 255 or not name.isprintable():
        raise bad
    if encode_cursor(name) != token:  # one spelling per cursor: no padding tricks, no stray bits
        raise bad
    return name


def _page_size(limit: int) -> int:
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_PAGE:
        raise InvalidParameterError(f"limit must be a whole number from 1 to {MAX_PAGE}, not {limit!r}")
    return limit


def _and(clause: str, condition: str) -> str:
    return f"{clause} AND {condition}" if clause else f" WHERE {condition}"


@dataclass(frozen=True, slots=True)
class AdapterPage:
    """One page of a listing: the records, and the cursor of the next page (None: this was the last)."""

    items: list[AdapterRecord]
    next_cursor: str | None


def list_page(reader: Reader, where: AdapterFilter, *, limit: int, cursor: str | None = None) -> AdapterPage:
    """The ``limit`` adapters matching ``where`` that sort (by name) after ``cursor``.

    One SELECT of ``limit + 1`` rows (the extra row only tells whether another page follows);
    free text on PostgreSQL takes the two-step path of ``_text_rows``.

    Raises:
        InvalidParameterError: a bad cursor or limit.
    """
    size = _page_size(limit)
    after = decode_cursor(cursor) if cursor is not None else None
    if reader.dialect == "postgresql" and where.query:
        clauses, params = where.exact_clauses()
        params["query"] = like_pattern(where.query)
        text = where.text_clause(reader.dialect)
        assert text is not None
        records = _text_rows(
            reader, _SELECT_ADAPTERS, clauses, params, text, size, after,
            lambda sql, values: _fetch_adapters(reader, sql, values),
        )
    else:
        clause, params = where.where(reader.dialect)
        if after is not None:
            clause = _and(clause, "a.name > :after")
            params["after"] = after
        params["limit"] = size + 1
        records = _fetch_adapters(reader, f"{_SELECT_ADAPTERS}{clause} ORDER BY a.name LIMIT :limit", params)
    more = len(records) > size
    return AdapterPage(records[:size], encode_cursor(records[size - 1].name) if more else None)


def _text_rows(
    reader: Reader,
    select: str,
    clauses: list[str],
    params: dict[str, Any],
    text: str,
    size: int,
    after: str | None,
    fetch: Callable[[str, dict[str, Any]], list[_T]],
) -> list[_T]:
    """Up to ``size + 1`` rows of ``select`` (over ``adapters a``) matching ``clauses`` and the
    free-text condition ``text``, by name, after ``after``; PostgreSQL only.

    Why not one statement: the planner picks between walking the name index and testing each row
    (fast when matches are common) and asking the trigram index for every match, then sorting
    (fast when they are rare). It assumes matches are spread evenly over the name order, and
    names are not: ``acme/`` matches 5% of a catalog, all of it in one stretch of names, so a walk
    from ``a`` reads half a million rows first (3 s measured at 1M entries). Here, when the
    planner expects few matches (``TEXT_DIRECT``), the trigram index answers at once; otherwise
    the first ``TEXT_WINDOW`` rows in order are tested directly (a few ms), and only if they hold
    less than a page does the rest come from the trigram index. The name-index walk is switched
    off for that one statement, so its cost is bounded by the number of matches, never by their
    position. A wrong estimate costs time, never rows: every path returns the same rows in order.
    """
    clauses = list(clauses)
    if after is not None:
        clauses.append("a.name > :after")
        params["after"] = after
    base = " WHERE " + " AND ".join(clauses) if clauses else ""
    hits: list[str] = []
    if _estimated_rows(reader, f"SELECT 1 FROM adapters a{_and(base, text)}", params) <= TEXT_DIRECT:
        rest = [*clauses, text]  # few matches expected: straight to the index
    else:
        params["window"] = TEXT_WINDOW
        window = reader.rows(f"SELECT a.name, {text} FROM adapters a{base} ORDER BY a.name LIMIT :window", params)
        hits = [r[0] for r in window if r[1]]
        if len(hits) > size or len(window) < TEXT_WINDOW:  # a full page, or the end of the listing
            return _named(select, hits[: size + 1], fetch)
        rest = [*clauses, text, "a.name > :window_end"]
        params["window_end"] = window[-1][0]
    params["limit"] = size + 1 - len(hits)
    previous = reader.rows("SELECT current_setting('enable_indexscan'), set_config('enable_indexscan', 'off', true)")
    try:
        tail = fetch(f"{select} WHERE {' AND '.join(rest)} ORDER BY a.name LIMIT :limit", params)
    finally:
        reader.rows("SELECT set_config('enable_indexscan', :value, true)", {"value": previous[0][0]})
    return _named(select, hits, fetch) + tail


def _named(select: str, names: list[str], fetch: Callable[[str, dict[str, Any]], list[_T]]) -> list[_T]:
    """The rows of ``names`` (a page's worth), by name."""
    return fetch(f"{select} WHERE a.name = ANY(:names) ORDER BY a.name", {"names": names}) if names else []


def _estimated_rows(reader: Reader, sql: str, params: dict[str, Any]) -> float:
    """The planner's estimate of how many rows ``sql`` returns (EXPLAIN: planned, not run)."""
    plan = reader.rows(f"EXPLAIN (FORMAT JSON) {sql}", params)[0][0]
    if isinstance(plan, str):
        plan = json.loads(plan)
    return float(plan[0]["Plan"]["Plan Rows"])


# -- hub repos (``list_models``) -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RepoRow:
    """One repo as ``list_models`` needs it: an adapter (with its hub row, if any) or an empty repo."""

    name: str
    private: bool
    revision: str | None
    created: datetime | None
    base_model: str | None
    tags: tuple[str, ...]


def _repo_conditions(
    dialect: str, column: str, search: str | None, author: str | None, params: dict[str, Any]
) -> list[str]:
    conditions = []
    if search:
        params["search"] = like_pattern(search)
        conditions.append(
            f"{column} ILIKE :search ESCAPE '\\'"
            if dialect == "postgresql"
            else f"lower({column}) LIKE lower(:search) ESCAPE '\\'"
        )
    if author is not None:
        params["author"] = like_pattern(author, prefix=True) + "/%"
        conditions.append(f"{column} LIKE :author ESCAPE '\\'")
    return conditions


def repo_page(
    reader: Reader,
    *,
    search: str | None = None,
    author: str | None = None,
    tags: Sequence[str] = (),
    limit: int,
    cursor: str | None = None,
) -> tuple[list[RepoRow], str | None]:
    """One page of hub repos by name: catalog adapters and repos created empty (``hub_repos`` only).

    ``search`` is a case-insensitive substring of the repo id, ``author`` its namespace, ``tags``
    must all be among the repo's tags: ``peft``, ``lora``, its catalog tags and
    ``base_model:<id>`` (as ``list_models`` filters). Private repos are included (flagged).

    Returns:
        The rows and the next page's cursor (None: this was the last page).

    Raises:
        InvalidParameterError: a bad cursor or limit.
    """
    size = _page_size(limit)
    dialect = reader.dialect
    params: dict[str, Any] = {}
    after = decode_cursor(cursor) if cursor is not None else None
    conditions = _repo_conditions(dialect, "a.name", None, author, params)
    for i, tag in enumerate(t for t in dict.fromkeys(tags) if t not in _ALWAYS_TAGS):
        params[f"tag{i}"] = tag
        tagged = f"a.id IN (SELECT adapter_id FROM adapter_tags WHERE tag = :tag{i})"
        if tag.startswith("base_model:"):
            params[f"base{i}"] = tag[len("base_model:") :]
            tagged = f"(a.base_model = :base{i} OR {tagged})"
        conditions.append(tagged)
    select = (
        "SELECT a.name, h.private, a.revision, a.created, a.base_model, CAST(a.tags AS TEXT)"
        " FROM adapters a LEFT JOIN hub_repos h ON h.name = a.name"
    )

    def fetch(sql: str, values: dict[str, Any]) -> list[RepoRow]:
        return [
            RepoRow(r[0], bool(r[1]), r[2], as_utc(r[3]), r[4], (*_ALWAYS_TAGS, *json.loads(r[5]), *_base_tag(r[4])))
            for r in reader.rows(sql, values)
        ]

    if search and dialect == "postgresql":
        params["search"] = like_pattern(search)
        # the name test, and the trigram index's necessary condition (migration 0006)
        text = f"a.name ILIKE :search ESCAPE '\\' AND {SEARCH_TEXT} ILIKE :search ESCAPE '\\'"
        found = _text_rows(reader, select, conditions, params, text, size, after, fetch)
    else:
        conditions += _repo_conditions(dialect, "a.name", search, None, params)
        if after is not None:
            conditions.append("a.name > :after")
            params["after"] = after
        params["limit"] = size + 1
        where = " WHERE " + " AND ".join(conditions) if conditions else ""
        found = fetch(f"{select}{where} ORDER BY a.name LIMIT :limit", params)
    if all(t in _ALWAYS_TAGS for t in tags):  # empty repos carry only peft and lora
        upto = found[size - 1].name if len(found) > size else None
        empty = _empty_repos(reader, search, author, after, upto, size)
        if empty:  # rare: merge in the database's own order, which the cursor comparison uses
            found = _in_database_order(reader, [*found, *empty])
    more = len(found) > size
    return found[:size], encode_cursor(found[size - 1].name) if more else None


def _in_database_order(reader: Reader, rows: list[RepoRow]) -> list[RepoRow]:
    """``rows`` sorted as ``ORDER BY name`` sorts them here (the collation decides, not Python)."""
    if reader.dialect != "postgresql":  # SQLite's BINARY order is code point order
        return sorted(rows, key=lambda row: row.name)
    by_name = {row.name: row for row in rows}
    ordered = reader.rows("SELECT n FROM unnest(CAST(:names AS text[])) AS n ORDER BY n", {"names": list(by_name)})
    return [by_name[r[0]] for r in ordered]


def _base_tag(base_model: str | None) -> tuple[str, ...]:
    return (f"base_model:{base_model}",) if base_model else ()


def _empty_repos(
    reader: Reader, search: str | None, author: str | None, after: str | None, upto: str | None, size: int
) -> list[RepoRow]:
    """Repos created through the hub API with nothing committed yet, between ``after`` and ``upto``.

    Bounded by the adapter page's last name (when that page is full), so the anti-join reads only
    the hub rows of this page's name range, not every hub row after the cursor.
    """
    params: dict[str, Any] = {"limit": size + 1}
    conditions = _repo_conditions(reader.dialect, "h.name", search, author, params)
    conditions.append("NOT EXISTS (SELECT 1 FROM adapters a WHERE a.name = h.name)")
    if after is not None:
        conditions.append("h.name > :after")
        params["after"] = after
    if upto is not None:
        conditions.append("h.name <= :upto")
        params["upto"] = upto
    rows = reader.rows(
        f"SELECT h.name, h.private, h.created FROM hub_repos h WHERE {' AND '.join(conditions)}"
        " ORDER BY h.name LIMIT :limit",
        params,
    )
    return [RepoRow(r[0], bool(r[1]), None, as_utc(r[2]), None, _ALWAYS_TAGS) for r in rows]
