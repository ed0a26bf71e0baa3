"""Writing to the catalog: ``CatalogWriter``, every write of one transaction.

``Catalog.transaction()`` hands one out; the one-shot ``Catalog`` methods (``add``,
``add_revision``, ``update``, ``add_metric``, …) each open a transaction and call one of its
methods. Why a writer object rather than a session: what a user sees as one operation (a hub
commit: weights, metrics, tags, README) must become visible all at once or not at all, and the
writer keeps the validation of each write in one place whichever way it is reached.

Each method flushes what it wrote, so later calls in the same transaction (and ``get``/``exists``
here) see it: ``add`` then ``add_metric`` on the new name, ``add_revision`` then
``add_revision_files`` on the new revision id.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from adapterhub.errors import AdapterExistsError, AdapterNotFoundError, CommitConflictError, InvalidParameterError
from adapterhub.names import validate_name
from adapterhub.store import reads
from adapterhub.store.blobs import validate_digest
from adapterhub.store.connections import Reader, sqlalchemy_reader
from adapterhub.store.orm import Adapter, AdapterRevision, AdapterTag, Lineage, Metric
from adapterhub.store.orm_hub import RevisionFile
from adapterhub.store.records import (
    KEEP,
    AdapterRecord,
    Keep,
    LineageRecord,
    MetricRecord,
    RevisionFileRecord,
    normalise_tags,
)
from adapterhub.store.revision_ids import FIRST_MESSAGE, make_revision_id

__all__ = ["CatalogWriter", "prepare_record"]

_ADAPTER_FIELDS = (
    "name", "digest", "size", "rank", "alpha", "target_modules", "config", "base_model", "ranks", "task",
    "tags", "description", "source_repo", "source_revision", "revision", "created",
)  # fmt: skip


def _now() -> datetime:
    return datetime.now(timezone.utc)


def prepare_record(record: AdapterRecord, *, message: str = FIRST_MESSAGE) -> AdapterRecord:
    """Validate a record for insertion and fill in ``created`` and the first ``revision``.

    Raises:
        InvalidNameError: the name is not ``namespace/name`` (``adapterhub.names.validate_name``).
        InvalidParameterError: a malformed digest, size, rank, tag, time or config.
    """
    validate_name(record.name)
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


def _adapter_values(record: AdapterRecord) -> dict[str, Any]:
    values = {key: getattr(record, key) for key in _ADAPTER_FIELDS}
    values["tags"] = list(record.tags)
    values["target_modules"] = list(record.target_modules)
    return values


def _first_revision(record: AdapterRecord, message: str) -> dict[str, Any]:
    return {
        "revision": record.revision,
        "parent_revision": None,
        "digest": record.digest,
        "size": record.size,
        "config": record.config,
        "message": message,
        "source_revision": record.source_revision,
        "created": record.created,
    }


class CatalogWriter:
    """The writes of one catalog transaction; get one from ``Catalog.transaction()``.

    Nothing a writer does is visible to other connections before the transaction commits, and
    none of it is if the ``with`` block raises. Do not keep a writer after its block ends.
    """

    def __init__(self, session: Session) -> None:
        self.session = session  # the ORM session, for store modules that own other tables (hub_catalog)

    @property
    def reader(self) -> Reader:
        """Reads (``reads.py``) on this transaction: they see what it wrote so far."""
        return sqlalchemy_reader(self.session.connection())

    def _adapter_row(self, name: str) -> Adapter:
        """The adapter's ORM row, locked until the transaction ends (PostgreSQL: FOR UPDATE)."""
        row = self.session.scalars(select(Adapter).where(Adapter.name == name).with_for_update()).one_or_none()
        if row is None:
            raise AdapterNotFoundError(name)
        return row

    # -- reads that see this transaction's writes --------------------------------------------------

    def get(self, name: str) -> AdapterRecord:
        """The record named ``name`` as this transaction sees it.

        Raises:
            AdapterNotFoundError: no such adapter.
        """
        return reads.get_adapter(self.reader, name)

    def exists(self, name: str) -> bool:
        """Whether ``name`` exists as this transaction sees it."""
        return reads.adapter_exists(self.reader, name)

    # -- adapters ----------------------------------------------------------------------------------

    def add(
        self, record: AdapterRecord, lineage: Sequence[LineageRecord] = (), *, message: str = FIRST_MESSAGE
    ) -> AdapterRecord:
        """Add an adapter with its first revision, tags and lineage (see ``Catalog.add``).

        Raises:
            AdapterExistsError: the name is taken (also when another process took it first).
            InvalidNameError / InvalidParameterError: malformed name, digest or tags.
        """
        stored = prepare_record(record, message=message)
        for parent in lineage:
            if parent.parent_digest is not None:
                validate_digest(parent.parent_digest)
        row = Adapter(**_adapter_values(stored))
        row.tag_rows = [AdapterTag(tag=tag) for tag in stored.tags]
        row.revision_rows = [AdapterRevision(**_first_revision(stored, message))]
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
        try:
            # A savepoint, so that a duplicate leaves the rest of the transaction usable and the
            # name can be checked: a unique violation on the name, whether a plain duplicate or a
            # race lost to another process, is AdapterExistsError; anything else is a bug.
            with self.session.begin_nested():
                self.session.add(row)
                self.session.flush()
        except IntegrityError:
            if self.exists(stored.name):
                raise AdapterExistsError(stored.name) from None
            raise
        return stored

    def bulk_add(self, records: Iterable[AdapterRecord], *, batch_size: int = 5000) -> int:
        """Add many adapters (no lineage), a few statements per batch (see ``Catalog.bulk_add``).

        Raises:
            AdapterExistsError: one of the names is taken.
        """
        count = 0
        batch: list[AdapterRecord] = []
        seen: set[str] = set()
        for record in records:
            if record.name in seen:
                raise AdapterExistsError(record.name)
            seen.add(record.name)
            batch.append(prepare_record(record))
            if len(batch) >= batch_size:
                count += self._insert_batch(batch)
                batch = []
        if batch:
            count += self._insert_batch(batch)
        return count

    def _insert_batch(self, batch: Sequence[AdapterRecord]) -> int:
        try:
            with self.session.begin_nested():
                rows = self.session.execute(
                    insert(Adapter).returning(Adapter.id, sort_by_parameter_order=True),
                    [_adapter_values(r) for r in batch],
                ).all()
        except IntegrityError:
            taken = [r.name for r in batch if self.exists(r.name)]
            if taken:
                raise AdapterExistsError(taken[0]) from None
            raise
        ids = [row[0] for row in rows]
        tag_rows = [{"adapter_id": i, "tag": t} for i, r in zip(ids, batch) for t in r.tags]
        if tag_rows:
            self.session.execute(insert(AdapterTag), tag_rows)
        self.session.execute(
            insert(AdapterRevision),
            [{"adapter_id": i, **_first_revision(r, FIRST_MESSAGE)} for i, r in zip(ids, batch)],
        )
        return len(batch)

    def remove(self, name: str) -> AdapterRecord:
        """Delete an adapter with its revisions, tags, metrics, revision files and the lineage rows
        where it is the child (see ``Catalog.remove``).

        Raises:
            AdapterNotFoundError: no such adapter.
        """
        row_id = self.session.scalar(select(Adapter.id).where(Adapter.name == name).with_for_update())
        if row_id is None:
            raise AdapterNotFoundError(name)
        record = self.get(name)
        # Children go by ON DELETE CASCADE in the database (the ORM relationships are passive).
        self.session.execute(delete(Adapter).where(Adapter.id == row_id))
        return record

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

        Raises:
            AdapterNotFoundError: no such adapter.
            InvalidParameterError: a malformed tag.
        """
        new_tags: tuple[str, ...] | None = None
        if tags is not None:
            try:
                new_tags = normalise_tags(tags)
            except InvalidParameterError as e:
                raise InvalidParameterError(f"adapter {name!r}: {e}") from None
        row = self._adapter_row(name)
        if new_tags is not None:
            row.tags = list(new_tags)
            self.session.execute(delete(AdapterTag).where(AdapterTag.adapter_id == row.id))
            if new_tags:
                self.session.execute(insert(AdapterTag), [{"adapter_id": row.id, "tag": t} for t in new_tags])
        if task is not None:
            row.task = task or None
        if description is not None:
            row.description = description
        self.session.flush()
        return self.get(name)

    # -- revisions ---------------------------------------------------------------------------------

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
        """Record a new version of ``name``'s content and make it the head (see ``Catalog.add_revision``).

        The head moves by compare-and-set in the database: the adapter row is read locked (SQLite:
        the transaction holds the write lock since ``BEGIN IMMEDIATE``; PostgreSQL: ``FOR UPDATE``
        waits for a concurrent writer and then sees its head), and the UPDATE only matches while
        the head is still ``expected_head``. Several server processes on one database therefore
        never build two revisions on one parent, where a process-local lock would let them.

        Args:
            expected_head: the revision the new one is built on (a hub commit passes the head it
                read); ``None`` appends to whatever the head is (a pull, a tool).

        Returns:
            The new 40-hex revision id.

        Raises:
            AdapterNotFoundError: no such adapter.
            CommitConflictError: the head is no longer ``expected_head``.
            InvalidParameterError: a malformed digest or config.
        """
        validate_digest(digest)
        row = self._adapter_row(name)
        parent = row.revision
        if expected_head is not None and parent != expected_head:
            raise CommitConflictError(
                f"the head of '{name}' moved from {expected_head[:12]} to {(parent or '')[:12]} "
                "while this revision was being built on it"
            )
        created = _now()
        revision = make_revision_id(
            name=name, parent_revision=parent, digest=digest, config=config, message=message, created=created
        )
        self.session.add(
            AdapterRevision(
                adapter_id=row.id,
                revision=revision,
                parent_revision=parent,
                digest=digest,
                size=size,
                config=config,
                message=message,
                source_revision=source_revision,
                created=created,
            )
        )
        values: dict[str, Any] = {
            "revision": revision,
            "digest": digest,
            "size": size,
            "config": config,
            "source_revision": source_revision,
        }
        if rank is not None:
            values["rank"] = rank
        if alpha is not None:
            values["alpha"] = alpha
        if not isinstance(ranks, Keep):
            values["ranks"] = ranks
        if target_modules is not None:
            values["target_modules"] = list(target_modules)
        if not isinstance(base_model, Keep):
            values["base_model"] = base_model
        if not isinstance(source_repo, Keep):
            values["source_repo"] = source_repo
        self.session.flush()  # the revision row first: the head must name an existing revision
        moved = self.session.execute(
            update(Adapter)
            .where(Adapter.id == row.id, Adapter.revision == parent)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if moved.rowcount != 1:  # only reachable if the row lock did not hold (it should)
            raise CommitConflictError(f"the head of '{name}' moved while this revision was being written")
        self.session.expire(row)  # later writes in this transaction (update) reload the new head
        return revision

    def add_revision_files(self, name: str, revision: str, files: Sequence[RevisionFileRecord]) -> None:
        """Attach extra files (README.md, tokenizer files, …) to a revision; their blobs must be stored.

        Raises:
            RevisionNotFoundError: no such adapter or revision (a full 40-hex id).
            InvalidParameterError: a malformed digest.
        """
        if not files:
            return
        for f in files:
            validate_digest(f.digest)
        rev_id = reads.revision_row_id(self.reader, name, revision)
        self.session.add_all(RevisionFile(revision_id=rev_id, path=f.path, digest=f.digest, size=f.size) for f in files)
        self.session.flush()

    # -- metrics -----------------------------------------------------------------------------------

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
        adapter = reads.adapter_id(self.reader, name)
        self.session.add(
            Metric(adapter_id=adapter, task=task, split=split, metric=metric, value=value, extra=extra, created=created)
        )
        self.session.flush()
        return MetricRecord(task=task, split=split, metric=metric, value=value, extra=extra, created=created)
