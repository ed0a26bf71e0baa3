"""The SQL catalog: which adapters exist, what they are, their revisions, lineage and metrics.

``Catalog(url)`` works on any SQLAlchemy URL; SQLite (the default, one file under
``ADAPTERHUB_HOME``) and PostgreSQL (multi-user, multi-node) are tested. Opening a catalog brings its
schema to the newest Alembic revision, safely when several processes open a new database at once.

Engine settings, migrations and the concurrency rules live in ``database.py``. A duplicate name
lost in a race with another process surfaces as the unique constraint's ``IntegrityError`` and
becomes ``AdapterExistsError``; every write runs in one transaction, so a failed call changes nothing.
"""

from __future__ import annotations

import builtins
import hashlib
import gc
import json
import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Select, Text, cast, delete, exists, func, insert, or_, select, union
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from adapterhub.errors import (
    AdapterExistsError,
    AdapterHubError,
    AdapterNotFoundError,
    InvalidNameError,
    InvalidParameterError,
)
from adapterhub.store.blobs import validate_digest
from adapterhub.store.database import WRITE_OPTION, CatalogSchemaError, make_engine, upgrade_database
from adapterhub.store.orm import Adapter, AdapterRevision, AdapterTag, Lineage, Metric
from adapterhub.store.records import (
    AdapterRecord,
    LineageRecord,
    MetricRecord,
    RevisionRecord,
    normalise_tags,
)

__all__ = [
    "Catalog",
    "CatalogSchemaError",
    "RevisionNotFoundError",
    "check_name",
    "make_revision_id",
]

HEAD_ALIASES = frozenset({"main", "HEAD", "head"})
_FIRST_MESSAGE = "add"  # default message of the revision every add creates
_UNSET: Any = object()


class RevisionNotFoundError(AdapterHubError, LookupError):
    """An adapter has no revision with this id (or the prefix is ambiguous)."""

    def __init__(self, name: str, revision: str, detail: str = "") -> None:
        self.name = name
        self.revision = revision
        super().__init__(
            f"adapter '{name}' has no revision '{revision}'{detail}; "
            "use 'main' for the newest or list the revisions of the adapter"
        )


# -- names and revision ids ----------------------------------------------------------------------


def check_name(name: str) -> str:
    """Minimal structural check: exactly one '/', both sides non-empty (full rules live in the facade).

    Raises:
        InvalidNameError: otherwise.
    """
    if not isinstance(name, str) or name.count("/") != 1 or not all(name.split("/")):
        raise InvalidNameError(f"invalid adapter name {name!r}: use the form namespace/name, e.g. acme/sql-lora")
    if len(name) > 255:
        raise InvalidNameError(f"adapter name {name[:40]!r}… is longer than 255 characters")
    return name


def _canonical_json(value: Any) -> str:
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise InvalidParameterError(f"adapter config must be plain JSON (no NaN, no objects): {e}") from None


def make_revision_id(
    *, name: str, parent_revision: str | None, digest: str, config: dict[str, Any], message: str, created: datetime
) -> str:
    """A revision id: sha1 of the canonical JSON of everything that defines the revision.

    Why this shape: the hub protocol that ``huggingface_hub`` and PEFT speak identifies versions by
    40-hex git commit ids (``X-Repo-Commit``, ``snapshots/<sha>`` cache folders, and its commit-hash
    checks), so the catalog's ids look like git's. Why deterministic rather than random: anyone can
    recompute an id from the stored row and detect tampering, and because the parent's id is part
    of the hash the history is a chain that cannot be rewritten without changing every later id
    (as in git). The adapter name and the creation time are included so two adapters with the same
    content, or the same content re-added after a removal, still get distinct commits.
    """
    payload = {
        "adapter": name,
        "parent": parent_revision,
        "digest": digest,
        "config": config,
        "message": message,
        "created": created.astimezone(timezone.utc).isoformat(),
    }
    return hashlib.sha1(_canonical_json(payload).encode("utf-8")).hexdigest()


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# -- row <-> record ------------------------------------------------------------------------------

_ADAPTER_COLUMNS = (
    Adapter.name,
    Adapter.digest,
    Adapter.size,
    Adapter.rank,
    Adapter.alpha,
    Adapter.target_modules,
    Adapter.config,
    Adapter.base_model,
    Adapter.ranks,
    Adapter.task,
    Adapter.tags,
    Adapter.description,
    Adapter.source_repo,
    Adapter.source_revision,
    Adapter.revision,
    Adapter.created,
)
_ADAPTER_FIELDS = tuple(c.key for c in _ADAPTER_COLUMNS)


def _record_from_row(row: Sequence[Any]) -> AdapterRecord:
    values = dict(zip(_ADAPTER_FIELDS, row))
    values["tags"] = tuple(values["tags"] or ())
    values["target_modules"] = tuple(values["target_modules"] or ())
    return AdapterRecord(**values)


# Listing is the hot path (``adapterhub list`` on 100k entries), so it reads the JSON columns as
# text and decodes all of them with one ``json.loads`` call, instead of one call per value through
# SQLAlchemy's type processors, and parses SQLite timestamps with the C-level
# ``datetime.fromisoformat`` (PostgreSQL's driver already returns datetimes). Measured on 10k rows
# (2-core machine): 0.25 s with the ORM's typed columns, 0.16 s this way, both with the collector
# paused; see bench/catalog_bench.py.
_PLAIN_FIELDS = (
    "name", "digest", "size", "rank", "alpha", "base_model", "task", "description",
    "source_repo", "source_revision", "revision",
)  # fmt: skip
_JSON_FIELDS = ("target_modules", "config", "ranks", "tags")


def _fast_select(dialect_name: str) -> Select[Any]:
    columns: builtins.list[Any] = [getattr(Adapter, key) for key in _PLAIN_FIELDS]
    columns += [cast(getattr(Adapter, key), Text).label(key) for key in _JSON_FIELDS]
    columns.append(cast(Adapter.created, Text).label("created") if dialect_name == "sqlite" else Adapter.created)
    return select(*columns)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building many objects at once.

    Building 100k records allocates millions of containers; CPython would run its generational
    collector dozens of times over the growing (and entirely live) heap: 0.25 s instead of 0.16 s
    for 10k rows in measurements. Nothing here creates cycles, so collection is only postponed, and the
    previous state is restored (this is safe with threads: the collector ends enabled if anyone
    had it enabled).
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _records_from_fast_rows(rows: Sequence[Sequence[Any]], dialect_name: str) -> builtins.list[AdapterRecord]:
    n = len(_PLAIN_FIELDS)
    decoded = json.loads(
        "[" + ",".join(f"[{r[n]},{r[n + 1]},{r[n + 2] or 'null'},{r[n + 3]}]" for r in rows) + "]"
    )
    sqlite = dialect_name == "sqlite"
    utc = timezone.utc
    records = []
    for r, (target_modules, config, ranks, tags) in zip(rows, decoded):
        created = r[n + 4]
        if sqlite:
            created = datetime.fromisoformat(created).replace(tzinfo=utc)
        records.append(
            AdapterRecord(
                name=r[0],
                digest=r[1],
                size=r[2],
                rank=r[3],
                alpha=r[4],
                base_model=r[5],
                task=r[6],
                description=r[7],
                source_repo=r[8],
                source_revision=r[9],
                revision=r[10],
                target_modules=tuple(target_modules),
                config=config,
                ranks=ranks,
                tags=tuple(tags),
                created=created,
            )
        )
    return records


def _adapter_values(record: AdapterRecord) -> dict[str, Any]:
    values = {key: getattr(record, key) for key in _ADAPTER_FIELDS}
    values["tags"] = list(record.tags)
    values["target_modules"] = list(record.target_modules)
    return values


def _revision_record(row: AdapterRevision) -> RevisionRecord:
    return RevisionRecord(
        revision=row.revision,
        parent_revision=row.parent_revision,
        digest=row.digest,
        size=row.size,
        config=row.config,
        message=row.message,
        source_revision=row.source_revision,
        created=row.created,
    )


def _lineage_record(row: Lineage, child_name: str) -> LineageRecord:
    return LineageRecord(
        parent_name=row.parent_name,
        operation=row.operation,
        parent_digest=row.parent_digest,
        params=row.params,
        weight=row.weight,
        position=row.position,
        child_name=child_name,
    )


def _prepare(record: AdapterRecord, *, message: str = _FIRST_MESSAGE) -> AdapterRecord:
    """Validate a record for insertion and fill in ``created`` and the first ``revision``."""
    check_name(record.name)
    try:
        validate_digest(record.digest)
    except InvalidParameterError as e:
        raise InvalidParameterError(f"adapter {record.name!r}: {e}") from None
    if record.size < 0 or record.rank < 0:
        raise InvalidParameterError(f"adapter {record.name!r}: size and rank must be >= 0")
    try:
        tags = normalise_tags(record.tags)
    except InvalidParameterError as e:
        raise InvalidParameterError(f"adapter {record.name!r}: {e}") from None
    created = record.created or _now()
    if created.tzinfo is None:
        raise InvalidParameterError(f"adapter {record.name!r}: created must be timezone-aware (UTC)")
    revision = make_revision_id(
        name=record.name,
        parent_revision=None,
        digest=record.digest,
        config=record.config,
        message=message,
        created=created,
    )
    return replace(record, tags=tags, created=created, revision=revision)



# -- the catalog ---------------------------------------------------------------------------------


class Catalog:
    """The adapter catalog on one SQL database.

    Args:
        url: any SQLAlchemy URL, e.g. ``sqlite:////home/me/.adapterhub/catalog.db``,
            ``sqlite://`` (in memory, for tests) or ``postgresql+psycopg://user@host/db``.
        migrate: bring the schema to the newest revision on open (default). ``False`` is for tools
            that inspect an old database as it is.

    Raises:
        CatalogSchemaError: the database was created by a newer adapterhub.

    Example:
        >>> catalog = Catalog("sqlite://")   # doctest: +SKIP
        >>> catalog.add(AdapterRecord(name="acme/sql", digest=d, size=n, rank=8, alpha=16.0,
        ...                           target_modules=("q_proj",), config=cfg))   # doctest: +SKIP
        >>> [r.name for r in catalog.list(tag="sql")]   # doctest: +SKIP
    """

    def __init__(self, url: str, *, migrate: bool = True) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._dialect = self.engine.dialect.name
        if migrate:
            try:
                upgrade_database(self.engine)
            except BaseException:
                self.engine.dispose()
                raise

    def __repr__(self) -> str:
        return f"Catalog({make_url(self.url).render_as_string(hide_password=True)!r})"

    def close(self) -> None:
        """Close all pooled connections (the catalog can still be used; it reconnects)."""
        self.engine.dispose()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def session(self, *, write: bool = False) -> Iterator[Session]:
        """One transaction for store modules that own other tables (``hub_catalog``).

        Commits on success, rolls back on any exception. Pass ``write=True`` for a transaction that
        writes: on SQLite it takes the write lock up front (``BEGIN IMMEDIATE``, see
        ``database.py``), so it queues behind other writers instead of failing with "locked".
        Objects read in it stay usable after it ends (``expire_on_commit=False``).
        """
        with Session(self.engine, expire_on_commit=False, autoflush=False) as session, session.begin():
            session.connection(execution_options={WRITE_OPTION: write})
            yield session

    _session = session  # the name hub_catalog.py uses today

    def _adapter_row(self, session: Session, name: str, *, for_update: bool = False) -> Adapter:
        stmt = select(Adapter).where(Adapter.name == name)
        if for_update:
            stmt = stmt.with_for_update()
        row = session.scalars(stmt).one_or_none()
        if row is None:
            raise AdapterNotFoundError(name)
        return row

    def _adapter_id(self, session: Session, name: str) -> int:
        adapter_id = session.scalar(select(Adapter.id).where(Adapter.name == name))
        if adapter_id is None:
            raise AdapterNotFoundError(name)
        return adapter_id

    # -- adding and removing ---------------------------------------------------------------------

    def add(
        self, record: AdapterRecord, lineage: Sequence[LineageRecord] = (), *, message: str = _FIRST_MESSAGE
    ) -> AdapterRecord:
        """Add an adapter with its first revision, tags and lineage, all in one transaction.

        ``record.revision`` is always computed here; ``record.created`` is kept if given.

        Args:
            record: the entry; its blob must already be in the blob store.
            lineage: the adapter's parents, in order (``position`` assigned when ``None``).
            message: the first revision's message.

        Returns:
            The stored record (with ``revision`` and ``created``).

        Raises:
            AdapterExistsError: the name is taken (also when another process took it first).
            InvalidNameError / InvalidParameterError: malformed name, digest or tags.
        """
        stored = _prepare(record, message=message)
        for parent in lineage:
            if parent.parent_digest is not None:
                validate_digest(parent.parent_digest)
        try:
            with self._session(write=True) as session:
                row = Adapter(**_adapter_values(stored))
                row.tag_rows = [AdapterTag(tag=tag) for tag in stored.tags]
                row.revision_rows = [
                    AdapterRevision(
                        revision=stored.revision,
                        parent_revision=None,
                        digest=stored.digest,
                        size=stored.size,
                        config=stored.config,
                        message=message,
                        source_revision=stored.source_revision,
                        created=stored.created,
                    )
                ]
                row.lineage_rows = [
                    Lineage(
                        parent_name=parent.parent_name,
                        parent_digest=parent.parent_digest,
                        operation=parent.operation,
                        params=dict(parent.params),
                        weight=parent.weight,
                        position=i if parent.position is None else parent.position,
                    )
                    for i, parent in enumerate(lineage)
                ]
                session.add(row)
        except IntegrityError:
            # A unique violation on the name, whether a plain duplicate or a race lost to another
            # process; anything else is a bug and is re-raised as is.
            if self.exists(stored.name):
                raise AdapterExistsError(stored.name) from None
            raise
        return stored

    def bulk_add(self, records: Iterable[AdapterRecord], *, batch_size: int = 5000) -> int:
        """Add many adapters (no lineage) in one transaction, a few statements per batch.

        For imports of whole catalogs and for benchmarks: about 100x faster than ``add`` in a loop.

        Returns:
            How many adapters were added.

        Raises:
            AdapterExistsError: one of the names is taken (nothing is added).
        """
        count = 0
        batch: builtins.list[AdapterRecord] = []
        seen: set[str] = set()
        try:
            with self._session(write=True) as session:
                for record in records:
                    if record.name in seen:
                        raise AdapterExistsError(record.name)
                    seen.add(record.name)
                    batch.append(_prepare(record))
                    if len(batch) >= batch_size:
                        count += self._insert_batch(session, batch)
                        batch = []
                if batch:
                    count += self._insert_batch(session, batch)
        except IntegrityError:
            taken = [r.name for r in batch if self.exists(r.name)]
            if taken:
                raise AdapterExistsError(taken[0]) from None
            raise
        return count

    @staticmethod
    def _insert_batch(session: Session, batch: Sequence[AdapterRecord]) -> int:
        rows = session.execute(
            insert(Adapter).returning(Adapter.id, sort_by_parameter_order=True),
            [_adapter_values(r) for r in batch],
        ).all()
        ids = [row[0] for row in rows]
        tag_rows = [{"adapter_id": i, "tag": t} for i, r in zip(ids, batch) for t in r.tags]
        if tag_rows:
            session.execute(insert(AdapterTag), tag_rows)
        session.execute(
            insert(AdapterRevision),
            [
                {
                    "adapter_id": i,
                    "revision": r.revision,
                    "parent_revision": None,
                    "digest": r.digest,
                    "size": r.size,
                    "config": r.config,
                    "message": _FIRST_MESSAGE,
                    "source_revision": r.source_revision,
                    "created": r.created,
                }
                for i, r in zip(ids, batch)
            ],
        )
        return len(batch)

    def remove(self, name: str) -> AdapterRecord:
        """Delete an adapter with its revisions, tags, metrics and the lineage rows where it is the
        child. Lineage rows where it is a *parent* stay (they name it by string).

        Returns:
            The record as it was.

        Raises:
            AdapterNotFoundError: no such adapter.
        """
        with self._session(write=True) as session:
            row = self._adapter_row(session, name, for_update=True)
            record = _record_from_row([getattr(row, key) for key in _ADAPTER_FIELDS])
            # Children go by ON DELETE CASCADE in the database (the ORM relationships are passive).
            session.execute(delete(Adapter).where(Adapter.id == row.id))
        return record

    # -- reading ---------------------------------------------------------------------------------

    def get(self, name: str) -> AdapterRecord:
        """The record named ``name``.

        Raises:
            AdapterNotFoundError: no such adapter.
        """
        with self._session() as session:
            records = self._fetch(session, _fast_select(self._dialect).where(Adapter.name == name))
        if not records:
            raise AdapterNotFoundError(name)
        return records[0]

    def exists(self, name: str) -> bool:
        """Whether an adapter named ``name`` is in the catalog."""
        with self._session() as session:
            return session.scalar(select(exists().where(Adapter.name == name))) or False

    @staticmethod
    def _filter(
        stmt: Any, *, base_model: str | None, task: str | None, tag: str | None, query: str | None
    ) -> Any:
        if base_model is not None:
            stmt = stmt.where(Adapter.base_model == base_model)
        if task is not None:
            stmt = stmt.where(Adapter.task == task)
        if tag is not None:
            stmt = stmt.where(Adapter.id.in_(select(AdapterTag.adapter_id).where(AdapterTag.tag == tag)))
        if query:
            pattern = f"%{_escape_like(query)}%"
            stmt = stmt.where(
                or_(
                    Adapter.name.ilike(pattern, escape="\\"),
                    Adapter.task.ilike(pattern, escape="\\"),
                    Adapter.description.ilike(pattern, escape="\\"),
                    exists().where(
                        AdapterTag.adapter_id == Adapter.id, AdapterTag.tag.ilike(pattern, escape="\\")
                    ),
                )
            )
        return stmt

    def list(
        self,
        *,
        base_model: str | None = None,
        task: str | None = None,
        tag: str | None = None,
        query: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> builtins.list[AdapterRecord]:
        """Adapters matching every given filter, ordered by name.

        One SELECT, no per-row queries: tags come from the row's JSON column.

        Args:
            base_model: exact base model id.
            task: exact task.
            tag: adapters carrying this tag (exact).
            query: free text, matched case-insensitively against name, task, description and tags.
            limit / offset: a page of the ordered result.
        """
        if limit is not None and limit < 0 or offset < 0:
            raise InvalidParameterError("limit and offset must be >= 0")
        stmt = self._filter(_fast_select(self._dialect), base_model=base_model, task=task, tag=tag, query=query)
        stmt = stmt.order_by(Adapter.name).offset(offset or None).limit(limit)
        with self._session() as session:
            return self._fetch(session, stmt)

    def _fetch(self, session: Session, stmt: Select[Any]) -> builtins.list[AdapterRecord]:
        with _gc_paused():
            # Core execution on the session's connection: the ORM's row machinery is not needed
            # for plain columns and costs about as much as the query itself.
            rows = session.connection().execute(stmt).all()
            return _records_from_fast_rows(rows, self._dialect)

    def count(
        self,
        *,
        base_model: str | None = None,
        task: str | None = None,
        tag: str | None = None,
        query: str | None = None,
    ) -> int:
        """How many adapters ``list`` would return without ``limit``/``offset`` (for paging)."""
        stmt = self._filter(
            select(func.count()).select_from(Adapter), base_model=base_model, task=task, tag=tag, query=query
        )
        with self._session() as session:
            return int(session.scalar(stmt) or 0)

    def names(self) -> builtins.list[str]:
        """All adapter names, sorted (cheap: no JSON columns are read)."""
        with self._session() as session:
            return builtins.list(session.scalars(select(Adapter.name).order_by(Adapter.name)))

    # -- blobs -----------------------------------------------------------------------------------

    def digest_in_use(self, digest: str) -> bool:
        """Whether any adapter head or any revision references this blob (do not delete it then)."""
        validate_digest(digest)
        with self._session() as session:
            in_revisions = session.scalar(select(exists().where(AdapterRevision.digest == digest)))
            return bool(in_revisions or session.scalar(select(exists().where(Adapter.digest == digest))))

    def referenced_digests(self) -> set[str]:
        """Every blob digest the catalog references (input to ``BlobStore.gc``)."""
        with self._session() as session:
            stmt = union(select(Adapter.digest), select(AdapterRevision.digest))
            return set(session.scalars(stmt))

    # -- lineage ---------------------------------------------------------------------------------

    def lineage(self, name: str) -> builtins.list[LineageRecord]:
        """The direct parents of ``name``, by position.

        Raises:
            AdapterNotFoundError: no such adapter.
        """
        with self._session() as session:
            adapter_id = self._adapter_id(session, name)
            rows = session.scalars(
                select(Lineage).where(Lineage.child_id == adapter_id).order_by(Lineage.position, Lineage.id)
            ).all()
            return [_lineage_record(row, name) for row in rows]

    def descendants(self, name: str) -> builtins.list[LineageRecord]:
        """Lineage rows naming ``name`` as parent (its direct children), by child name.

        Works for names no longer in the catalog: lineage keeps parents by name.
        """
        with self._session() as session:
            rows = session.execute(
                select(Lineage, Adapter.name)
                .join(Adapter, Lineage.child_id == Adapter.id)
                .where(Lineage.parent_name == name)
                .order_by(Adapter.name, Lineage.position, Lineage.id)
            ).all()
            return [_lineage_record(row, child) for row, child in rows]

    # -- revisions -------------------------------------------------------------------------------

    def add_revision(
        self,
        name: str,
        *,
        digest: str,
        size: int,
        config: dict[str, Any],
        message: str,
        source_revision: str | None = None,
        rank: int | None = None,
        alpha: float | None = None,
        ranks: dict[str, int] | None = _UNSET,
        target_modules: Sequence[str] | None = None,
        base_model: str | None = _UNSET,
        source_repo: str | None = _UNSET,
    ) -> str:
        """Record a new version of ``name``'s content and make it the head.

        The adapter row's digest, size, config and source revision follow the new head; pass the
        descriptive fields that changed with the content (``rank``, ``alpha``, ``ranks``,
        ``target_modules``, ``base_model``, ``source_repo``) too, or they keep their old values.

        Returns:
            The new 40-hex revision id.

        Raises:
            AdapterNotFoundError: no such adapter.
        """
        validate_digest(digest)
        with self._session(write=True) as session:
            row = self._adapter_row(session, name, for_update=True)
            created = _now()
            revision = make_revision_id(
                name=name, parent_revision=row.revision, digest=digest, config=config, message=message, created=created
            )
            session.add(
                AdapterRevision(
                    adapter_id=row.id,
                    revision=revision,
                    parent_revision=row.revision,
                    digest=digest,
                    size=size,
                    config=config,
                    message=message,
                    source_revision=source_revision,
                    created=created,
                )
            )
            row.revision = revision
            row.digest = digest
            row.size = size
            row.config = config
            row.source_revision = source_revision
            if rank is not None:
                row.rank = rank
            if alpha is not None:
                row.alpha = alpha
            if ranks is not _UNSET:
                row.ranks = ranks
            if target_modules is not None:
                row.target_modules = builtins.list(target_modules)
            if base_model is not _UNSET:
                row.base_model = base_model
            if source_repo is not _UNSET:
                row.source_repo = source_repo
        return revision

    def revisions(self, name: str) -> builtins.list[RevisionRecord]:
        """All revisions of ``name``, newest first (like ``git log``).

        Raises:
            AdapterNotFoundError: no such adapter.
        """
        with self._session() as session:
            adapter_id = self._adapter_id(session, name)
            rows = session.scalars(
                select(AdapterRevision)
                .where(AdapterRevision.adapter_id == adapter_id)
                .order_by(AdapterRevision.id.desc())
            ).all()
            return [_revision_record(row) for row in rows]

    def get_revision(self, name: str, revision: str | None = None) -> RevisionRecord:
        """One revision: ``None``/``main``/``HEAD`` for the head, a full id, or a unique prefix of at
        least 7 hex characters.

        Raises:
            AdapterNotFoundError: no such adapter.
            RevisionNotFoundError: no such revision, or the prefix matches several.
        """
        with self._session() as session:
            if revision is None or revision in HEAD_ALIASES:
                head = self._adapter_row(session, name)
                rev_filter = AdapterRevision.revision == head.revision
                adapter_id = head.id
            else:
                adapter_id = self._adapter_id(session, name)
                lowered = revision.lower()
                if not (7 <= len(lowered) <= 40) or any(c not in "0123456789abcdef" for c in lowered):
                    raise RevisionNotFoundError(name, revision)
                if len(lowered) == 40:
                    rev_filter = AdapterRevision.revision == lowered
                else:
                    rev_filter = AdapterRevision.revision.startswith(lowered, autoescape=True)
            rows = session.scalars(
                select(AdapterRevision).where(AdapterRevision.adapter_id == adapter_id, rev_filter).limit(2)
            ).all()
            if not rows:
                raise RevisionNotFoundError(name, revision or "main")
            if len(rows) > 1:
                raise RevisionNotFoundError(name, revision or "main", " (the prefix is ambiguous; give more characters)")
            return _revision_record(rows[0])

    # -- metrics ---------------------------------------------------------------------------------

    def add_metric(
        self,
        name: str,
        *,
        task: str,
        split: str,
        metric: str,
        value: float,
        extra: dict[str, Any] | None = None,
    ) -> MetricRecord:
        """Record one measured number for ``name``.

        Raises:
            AdapterNotFoundError: no such adapter.
            InvalidParameterError: ``value`` is NaN or infinite (SQLite cannot store NaN).
        """
        value = float(value)
        if not math.isfinite(value):
            raise InvalidParameterError(f"metric {metric!r} of {name!r} is {value}; only finite values are stored")
        created = _now()
        with self._session(write=True) as session:
            adapter_id = self._adapter_id(session, name)
            session.add(
                Metric(
                    adapter_id=adapter_id,
                    task=task,
                    split=split,
                    metric=metric,
                    value=value,
                    extra=extra,
                    created=created,
                )
            )
        return MetricRecord(task=task, split=split, metric=metric, value=value, extra=extra, created=created)

    def metrics(self, name: str) -> builtins.list[MetricRecord]:
        """All metrics of ``name``, oldest first.

        Raises:
            AdapterNotFoundError: no such adapter.
        """
        with self._session() as session:
            adapter_id = self._adapter_id(session, name)
            rows = session.scalars(select(Metric).where(Metric.adapter_id == adapter_id).order_by(Metric.id)).all()
            return [
                MetricRecord(task=r.task, split=r.split, metric=r.metric, value=r.value, extra=r.extra, created=r.created)
                for r in rows
            ]

    # -- editing ---------------------------------------------------------------------------------

    def update(
        self,
        name: str,
        *,
        tags: Sequence[str] | None = None,
        task: str | None = None,
        description: str | None = None,
    ) -> AdapterRecord:
        """Change descriptive fields; ``None`` leaves a field as it is, ``task=""`` clears the task.

        Tags are replaced as a whole (the JSON list and the ``adapter_tags`` rows together).

        Returns:
            The updated record.

        Raises:
            AdapterNotFoundError: no such adapter.
        """
        new_tags: tuple[str, ...] | None = None
        if tags is not None:
            try:
                new_tags = normalise_tags(tags)
            except InvalidParameterError as e:
                raise InvalidParameterError(f"adapter {name!r}: {e}") from None
        with self._session(write=True) as session:
            row = self._adapter_row(session, name, for_update=True)
            if new_tags is not None:
                row.tags = builtins.list(new_tags)
                session.execute(delete(AdapterTag).where(AdapterTag.adapter_id == row.id))
                if new_tags:
                    session.execute(insert(AdapterTag), [{"adapter_id": row.id, "tag": t} for t in new_tags])
            if task is not None:
                row.task = task or None
            if description is not None:
                row.description = description
            session.flush()
            return _record_from_row([getattr(row, key) for key in _ADAPTER_FIELDS])
