"""Reads the hub's web pages need beyond ``list_page``: filter choices and a listing by metric.

The catalog page offers drop-downs of the tasks, base models, tags and metrics that exist, and a
sort by a metric (best value first). Both are one grouped SELECT each, instead of the page calling
``show`` per adapter: a page must answer in well under 200 ms on any catalog a team keeps.

Sorting by a metric cannot use the name keyset of ``list_page``; it pages by offset over one
ordered SELECT (``LEFT JOIN``: entries without the metric come last, by name). Access stays the
caller's business, as in ``listing``: ``visible`` keeps the rows the caller may see, and pages
are filled past hidden rows.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

from adapterhub.app.core import HubCore
from adapterhub.errors import InvalidParameterError
from adapterhub.store import AdapterRecord, reads
from adapterhub.store.reads import _SELECT_ADAPTERS, AdapterFilter, _fetch_adapters

__all__ = ["MAX_CHOICES", "MAX_OFFSET", "Facets", "MetricPage", "facets", "metric_page"]

MAX_CHOICES = 200  # values per drop-down: a filter menu, not an index of the catalog
MAX_OFFSET = 100_000  # deep offset pages cost a scan each; past this, narrow the filter


@dataclass(frozen=True, slots=True)
class Facets:
    """The values a catalog filter can take (each sorted, at most ``MAX_CHOICES``)."""

    tasks: list[str]
    base_models: list[str]
    tags: list[str]
    metrics: list[str]


@dataclass(frozen=True, slots=True)
class MetricPage:
    """One page of entries by a metric (best first), each with its value (None: not measured),
    and the offset of the next page (None: the last page)."""

    items: list[tuple[AdapterRecord, float | None]]
    next_offset: int | None


def facets(core: HubCore, *, hidden: Collection[str] = ()) -> Facets:
    """The distinct tasks, base models, tags and metric names of the catalog, leaving out those of
    the ``hidden`` entries (private repos the caller may not read: a tag can be a secret too)."""
    names = {f"h{i}": n for i, n in enumerate(sorted(hidden))}
    skip = f" AND a.name NOT IN ({', '.join(':' + k for k in names)})" if names else ""

    def distinct(reader: reads.Reader, column: str, source: str) -> list[str]:
        rows = reader.rows(
            f"SELECT DISTINCT {column} FROM {source} WHERE {column} IS NOT NULL{skip} ORDER BY {column}"
            f" LIMIT {MAX_CHOICES}", names,
        )
        return [str(r[0]) for r in rows if r[0] not in (None, "")]

    with core.catalog.reading() as reader:
        return Facets(
            tasks=distinct(reader, "a.task", "adapters a"),
            base_models=distinct(reader, "a.base_model", "adapters a"),
            tags=distinct(reader, "t.tag", "adapter_tags t JOIN adapters a ON a.id = t.adapter_id"),
            metrics=distinct(reader, "m.metric", "metrics m JOIN adapters a ON a.id = m.adapter_id"),
        )


def metric_page(
    core: HubCore,
    metric: str,
    *,
    base_model: str | None = None,
    task: str | None = None,
    tag: str | None = None,
    query: str | None = None,
    limit: int = 50,
    offset: int = 0,
    visible: Callable[[list[AdapterRecord]], list[AdapterRecord]] | None = None,
) -> MetricPage:
    """Entries matching every filter (as ``list``), ordered by their best value of ``metric``.

    Args:
        metric: a metric name (``accuracy``, ``macro_f1``, ...); the highest value over tasks and
            splits ranks an entry.
        limit: rows per page (1 to 1000); offset: rows of the ordering to skip.
        visible: keeps the rows the caller may see (in order).

    Raises:
        InvalidParameterError: a bad limit or offset.
    """
    if not 1 <= limit <= 1000 or not 0 <= offset <= MAX_OFFSET:
        raise InvalidParameterError(f"limit must be 1..1000 and offset 0..{MAX_OFFSET} when sorting by a metric")
    kept: list[tuple[AdapterRecord, float | None]] = []
    at = offset
    while True:
        batch = _ranked(core, metric, AdapterFilter(base_model, task, tag, query), limit + 1, at)
        records = [r for r, _ in batch]
        shown = {r.name for r in (visible(records) if visible is not None else records)}
        for record, value in batch:
            at += 1
            if record.name in shown:
                kept.append((record, value))
                if len(kept) > limit:
                    return MetricPage(kept[:limit], at - 1)
        if len(batch) <= limit:
            return MetricPage(kept, None)


def _ranked(core: HubCore, metric: str, where: AdapterFilter, limit: int, offset: int
            ) -> list[tuple[AdapterRecord, float | None]]:
    with core.catalog.reading() as reader:
        clause, params = where.where(reader.dialect)
        params.update(metric=metric, limit=limit, offset=offset)
        ranked = reader.rows(
            "SELECT a.name, MAX(m.value) AS best FROM adapters a"
            " LEFT JOIN metrics m ON m.adapter_id = a.id AND m.metric = :metric"
            f"{clause} GROUP BY a.name ORDER BY CASE WHEN MAX(m.value) IS NULL THEN 1 ELSE 0 END,"
            " MAX(m.value) DESC, a.name LIMIT :limit OFFSET :offset",
            params,
        )
        if not ranked:
            return []
        names = {f"n{i}": r[0] for i, r in enumerate(ranked)}
        records = _fetch_adapters(reader, f"{_SELECT_ADAPTERS} WHERE a.name IN ({', '.join(':' + k for k in names)})",
                                  names)
    by_name = {r.name: r for r in records}
    return [(by_name[r[0]], None if r[1] is None else float(r[1])) for r in ranked if r[0] in by_name]
