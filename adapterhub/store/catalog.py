"""The SQL catalog: which adapters exist, what they are, their revisions, lineage and metrics.

``Catalog(url)`` works on any SQLAlchemy URL; SQLite (the default, one file under
``ADAPTERHUB_HOME``) and PostgreSQL (multi-user, multi-node) are tested. Opening a catalog brings its
schema to the newest Alembic revision, safely when several processes open a new database at once.

The catalog is spread over a few modules, one job each:
- ``catalog.py`` (this one): ``Catalog``: opening, transactions, and the one-call API.
- ``writer.py``: ``CatalogWriter``, every write and its validation, inside one transaction.
- ``reads.py``: every read as plain SQL, and rows into records (the fast listing path).
- ``connections.py``: how reads reach the database (the standard library's ``sqlite3`` for a SQLite
  file, so opening and listing an up-to-date catalog never imports SQLAlchemy).
- ``revision_ids.py``: revision ids; ``database.py``: engines, SQLite settings, migrations.

Every write runs in one transaction, so a failed call changes nothing; ``transaction()`` puts
several writes in one. A duplicate name lost in a race with another process surfaces as the unique
constraint's ``IntegrityError`` and becomes ``AdapterExistsError``.
"""

from __future__ import annotations

import builtins
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from adapterhub.errors import InvalidParameterError
from adapterhub.store import reads
from adapterhub.store.blobs import validate_digest
from adapterhub.store.connections import SCHEMA_HEAD, Reader, SqliteFiles, sqlalchemy_reader, sqlite_file
from adapterhub.store.records import KEEP, AdapterRecord, Keep, LineageRecord, MetricRecord, RevisionRecord
from adapterhub.store.revision_ids import FIRST_MESSAGE

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from adapterhub.store.writer import CatalogWriter

__all__ = ["Catalog"]


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
        self._engine: Engine | None = None
        self._engine_lock = threading.Lock()
        self._local = threading.local()  # .writer: the transaction open on this thread, if any
        path = sqlite_file(url)
        self._files = SqliteFiles(path) if path is not None else None
        # An up-to-date SQLite file costs one SELECT here; anything else goes through Alembic.
        if migrate and (self._files is None or self._files.schema_revision() != SCHEMA_HEAD):
            from adapterhub.store.database import upgrade_database  # lazy: SQLAlchemy and Alembic

            try:
                upgrade_database(self.engine)
            except BaseException:
                self.close()
                raise

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine, made on first use (plain reads of a SQLite file never need one)."""
        if self._engine is None:
            from adapterhub.store.database import make_engine  # lazy: SQLAlchemy

            with self._engine_lock:
                if self._engine is None:
                    self._engine = make_engine(self.url)
        return self._engine

    def __repr__(self) -> str:
        from sqlalchemy.engine import make_url  # lazy: SQLAlchemy

        return f"Catalog({make_url(self.url).render_as_string(hide_password=True)!r})"

    def close(self) -> None:
        """Close all pooled connections (the catalog can still be used; it reconnects)."""
        if self._files is not None:
            self._files.close()
        if self._engine is not None:
            self._engine.dispose()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- transactions ----------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[CatalogWriter]:
        """One write transaction: every write made through the writer commits together, or none does.

        Commits when the block ends normally and rolls back on any exception. On SQLite the write
        lock is taken up front (``BEGIN IMMEDIATE``, see ``database.py``), so concurrent writers
        queue instead of failing with "locked"; on PostgreSQL it is one transaction. Inside the
        block, on the same thread, the writer's reads and every ``Catalog`` method (and
        ``hub_catalog`` function) see what the transaction wrote so far, and a nested
        ``transaction()`` joins it as a savepoint (rolled back alone if its own block raises).

        Example:
            >>> with catalog.transaction() as tx:   # doctest: +SKIP
            ...     tx.add(record, lineage)
            ...     tx.add_metric(record.name, task="t", split="test", metric="accuracy", value=0.9)
        """
        outer: CatalogWriter | None = getattr(self._local, "writer", None)
        if outer is not None:
            with outer.session.begin_nested():
                yield outer
            return
        from sqlalchemy.orm import Session  # lazy: SQLAlchemy's ORM, only for writes

        from adapterhub.store.database import WRITE_OPTION
        from adapterhub.store.writer import CatalogWriter

        # Nothing ORM-shaped leaves the block, so committing need not expire what it loaded.
        with Session(self.engine, expire_on_commit=False, autoflush=False) as session, session.begin():
            session.connection(execution_options={WRITE_OPTION: True})  # SQLite: BEGIN IMMEDIATE
            self._local.writer = CatalogWriter(session)
            try:
                yield self._local.writer
            finally:
                self._local.writer = None

    @contextmanager
    def reading(self) -> Iterator[Reader]:
        """One read transaction for plain SQL reads (``reads.py``, ``hub_catalog``).

        Inside ``transaction()`` on the same thread it reads that transaction (its own writes
        included); otherwise a fresh snapshot of what is committed.
        """
        outer: CatalogWriter | None = getattr(self._local, "writer", None)
        if outer is not None:
            yield outer.reader
        elif self._files is not None:
            with self._files.reading() as reader:
                yield reader
        else:
            with self.engine.connect() as conn, conn.begin():
                yield sqlalchemy_reader(conn)

    # -- adding and removing (each one transaction) ----------------------------------------------

    def add(
        self, record: AdapterRecord, lineage: Sequence[LineageRecord] = (), *, message: str = FIRST_MESSAGE
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
        with self.transaction() as tx:
            return tx.add(record, lineage, message=message)

    def bulk_add(self, records: Iterable[AdapterRecord], *, batch_size: int = 5000) -> int:
        """Add many adapters (no lineage) in one transaction, a few statements per batch.

        For imports of whole catalogs and for benchmarks: about 100x faster than ``add`` in a loop.

        Returns:
            How many adapters were added.

        Raises:
            AdapterExistsError: one of the names is taken (nothing is added).
        """
        with self.transaction() as tx:
            return tx.bulk_add(records, batch_size=batch_size)

    def remove(self, name: str) -> AdapterRecord:
        """Delete an adapter with its revisions, tags, metrics and the lineage rows where it is the
        child. Lineage rows where it is a *parent* stay (they name it by string).

        Returns:
            The record as it was.

        Raises:
            AdapterNotFoundError: no such adapter.
        """
        with self.transaction() as tx:
            return tx.remove(name)

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
        with self.transaction() as tx:
            return tx.update(name, tags=tags, task=task, description=description)

    def add_revision(
        self,
        name: str,
        *,
        digest: str,
        size: int,
        config: dict[str, Any],
        message: str,
        expected_head: str | None = None,
        source_revision: str | None = None,
        rank: int | None = None,
        alpha: float | None = None,
        ranks: dict[str, int] | None | Keep = KEEP,
        target_modules: Sequence[str] | None = None,
        base_model: str | None | Keep = KEEP,
        source_repo: str | None | Keep = KEEP,
    ) -> str:
        """Record a new version of ``name``'s content and make it the head.

        The adapter row's digest, size, config and source revision follow the new head; pass the
        descriptive fields that changed with the content (``rank``, ``alpha``, ``ranks``,
        ``target_modules``, ``base_model``, ``source_repo``) too, or they keep their old values.
        With ``expected_head`` the head moves only if it is still that revision (compare-and-set
        in the database, so it holds across processes and hosts).

        Returns:
            The new 40-hex revision id.

        Raises:
            AdapterNotFoundError: no such adapter.
            CommitConflictError: the head is no longer ``expected_head``.
        """
        with self.transaction() as tx:
            return tx.add_revision(
                name,
                digest=digest,
                size=size,
                config=config,
                message=message,
                expected_head=expected_head,
                source_revision=source_revision,
                rank=rank,
                alpha=alpha,
                ranks=ranks,
                target_modules=target_modules,
                base_model=base_model,
                source_repo=source_repo,
            )

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
        with self.transaction() as tx:
            return tx.add_metric(name, task=task, split=split, metric=metric, value=value, extra=extra)

    # -- reading ---------------------------------------------------------------------------------

    def get(self, name: str) -> AdapterRecord:
        """The record named ``name``.

        Raises:
            AdapterNotFoundError: no such adapter.
        """
        with self.reading() as reader:
            return reads.get_adapter(reader, name)

    def exists(self, name: str) -> bool:
        """Whether an adapter named ``name`` is in the catalog."""
        with self.reading() as reader:
            return reads.adapter_exists(reader, name)

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
        where = reads.AdapterFilter(base_model=base_model, task=task, tag=tag, query=query)
        with self.reading() as reader:
            return reads.list_adapters(reader, where, limit=limit, offset=offset)

    def count(
        self,
        *,
        base_model: str | None = None,
        task: str | None = None,
        tag: str | None = None,
        query: str | None = None,
    ) -> int:
        """How many adapters ``list`` would return without ``limit``/``offset`` (for paging)."""
        where = reads.AdapterFilter(base_model=base_model, task=task, tag=tag, query=query)
        with self.reading() as reader:
            return reads.count_adapters(reader, where)

    def names(self) -> builtins.list[str]:
        """All adapter names, sorted (cheap: no JSON columns are read)."""
        with self.reading() as reader:
            return reads.adapter_names(reader)

    def digest_in_use(self, digest: str) -> bool:
        """Whether any adapter head or any revision references this blob (do not delete it then)."""
        validate_digest(digest)
        with self.reading() as reader:
            return reads.digest_in_use(reader, digest)

    def referenced_digests(self) -> set[str]:
        """Every blob digest the catalog references (input to ``BlobStore.gc``)."""
        with self.reading() as reader:
            return reads.referenced_digests(reader)

    def lineage(self, name: str) -> builtins.list[LineageRecord]:
        """The direct parents of ``name``, by position.

        Raises:
            AdapterNotFoundError: no such adapter.
        """
        with self.reading() as reader:
            return reads.lineage(reader, name)

    def descendants(self, name: str) -> builtins.list[LineageRecord]:
        """Lineage rows naming ``name`` as parent (its direct children), by child name.

        Works for names no longer in the catalog: lineage keeps parents by name.
        """
        with self.reading() as reader:
            return reads.descendants(reader, name)

    def revisions(self, name: str) -> builtins.list[RevisionRecord]:
        """All revisions of ``name``, newest first (like ``git log``).

        Raises:
            AdapterNotFoundError: no such adapter.
        """
        with self.reading() as reader:
            return reads.revisions(reader, name)

    def get_revision(self, name: str, revision: str | None = None) -> RevisionRecord:
        """One revision: ``None``/``main``/``HEAD`` for the head, a full id, or a unique prefix of at
        least 7 hex characters.

        Raises:
            AdapterNotFoundError: no such adapter.
            RevisionNotFoundError: no such revision, or the prefix matches several.
        """
        with self.reading() as reader:
            return reads.get_revision(reader, name, revision)

    def metrics(self, name: str) -> builtins.list[MetricRecord]:
        """All metrics of ``name``, oldest first.

        Raises:
            AdapterNotFoundError: no such adapter.
        """
        with self.reading() as reader:
            return reads.metrics(reader, name)
