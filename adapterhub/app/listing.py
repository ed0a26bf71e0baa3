"""Paged listings for catalogs of any size: ``AdapterHub.list_page`` and ``hub_list_repos_page``.

``AdapterHub.list`` returns everything that matches, which is right for a laptop catalog and wrong
for a million entries. These return one page and an opaque ``next_cursor`` (keyset pagination,
see ``store/paging.py``): each page costs the same however deep it is, and rows added while a
client pages never appear twice. Neither counts the matches; ``count`` is a separate call because
counting a million rows costs more than every page a person will read.

Access is the caller's business (the server filters private repos per token), but a filter that
hides rows must not return short pages forever: ``visible`` pages keep reading until a page is
full or the listing ends, and the cursor then continues after the last row *examined*.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from adapterhub.app.core import HubCore
from adapterhub.app.repos import RepoSummary
from adapterhub.store import AdapterRecord, paging, reads

__all__ = ["DEFAULT_PAGE", "MAX_PAGE", "AdapterPage", "RepoPage", "count", "list_page", "repos_page"]

DEFAULT_PAGE = 50
MAX_PAGE = paging.MAX_PAGE  # for the faces, which do not import the store
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class AdapterPage:
    """One page of catalog entries and the cursor of the next (None: this was the last page)."""

    items: list[AdapterRecord]
    next_cursor: str | None

    def to_dict(self) -> dict[str, object]:
        """The ``--json`` / REST shape: ``{"items": [...], "next_cursor": ...}``."""
        return {"items": [r.to_dict() for r in self.items], "next_cursor": self.next_cursor}


@dataclass(frozen=True, slots=True)
class RepoPage:
    """One page of hub repos (``list_models``) and the cursor of the next."""

    items: list[RepoSummary]
    next_cursor: str | None


def list_page(
    core: HubCore,
    *,
    base_model: str | None = None,
    task: str | None = None,
    tag: str | None = None,
    query: str | None = None,
    limit: int = DEFAULT_PAGE,
    cursor: str | None = None,
    visible: Callable[[list[AdapterRecord]], list[AdapterRecord]] | None = None,
) -> AdapterPage:
    """Catalog entries matching every filter, by name, one page after ``cursor``.

    Args:
        base_model / task / tag: exact matches; query: free text in name, task, description, tags
            (case-insensitive), as ``list``.
        limit: rows per page (1 to ``store.paging.MAX_PAGE``).
        cursor: the ``next_cursor`` of the previous page; None for the first page.
        visible: keeps the rows the caller may see (in order); pages are filled past hidden rows.

    Raises:
        InvalidParameterError: a bad cursor or limit.

    Example:
        >>> page = hub.list_page(task="text-to-sql", limit=50)   # doctest: +SKIP
        >>> more = hub.list_page(task="text-to-sql", limit=50, cursor=page.next_cursor)   # doctest: +SKIP
    """
    where = reads.AdapterFilter(base_model=base_model, task=task, tag=tag, query=query)

    def fetch(after: str | None) -> tuple[list[AdapterRecord], str | None]:
        with core.catalog.reading() as reader:
            page = paging.list_page(reader, where, limit=limit, cursor=after)
        return page.items, page.next_cursor

    items, next_cursor = _filled(fetch, cursor, limit, visible, lambda r: r.name)
    return AdapterPage(items, next_cursor)


def count(
    core: HubCore,
    *,
    base_model: str | None = None,
    task: str | None = None,
    tag: str | None = None,
    query: str | None = None,
) -> int:
    """How many entries match (exact; a full index scan on a big catalog, so only on request)."""
    return core.catalog.count(base_model=base_model, task=task, tag=tag, query=query)


def repos_page(
    core: HubCore,
    *,
    search: str | None = None,
    author: str | None = None,
    tags: list[str] | tuple[str, ...] = (),
    library: str | None = None,
    limit: int = 1000,
    cursor: str | None = None,
    visible: Callable[[list[RepoSummary]], list[RepoSummary]] | None = None,
) -> RepoPage:
    """One page of hub repos by id (``HfApi.list_models``), private ones included unless
    ``visible`` drops them; same filters as ``repos.list_repos``.

    Raises:
        InvalidParameterError: a bad cursor or limit.
    """
    if library is not None and library.lower() != "peft":
        return RepoPage([], None)

    def fetch(after: str | None) -> tuple[list[RepoSummary], str | None]:
        with core.catalog.reading() as reader:
            rows, next_cursor = paging.repo_page(
                reader, search=search, author=author, tags=tags, limit=limit, cursor=after
            )
        return [RepoSummary(r.name, r.private, r.revision, r.created, r.base_model, r.tags) for r in rows], next_cursor

    items, next_cursor = _filled(fetch, cursor, limit, visible, lambda s: s.repo_id)
    return RepoPage(items, next_cursor)


def _filled(
    fetch: Callable[[str | None], tuple[list[_T], str | None]],
    cursor: str | None,
    limit: int,
    visible: Callable[[list[_T]], list[_T]] | None,
    name_of: Callable[[_T], str],
) -> tuple[list[_T], str | None]:
    """Pages from ``fetch`` until ``limit`` visible rows or the end; the cursor after the last row
    returned (rows after it that were fetched but not returned are read again next time)."""
    items, next_cursor = fetch(cursor)
    if visible is None:
        return items, next_cursor
    kept = visible(items)
    while len(kept) < limit and next_cursor is not None:
        more, next_cursor = fetch(next_cursor)
        kept.extend(visible(more))
    if len(kept) > limit:  # the page ends inside the last batch: continue right after its last row
        kept = kept[:limit]
        next_cursor = paging.encode_cursor(name_of(kept[-1]))
    return kept, next_cursor
