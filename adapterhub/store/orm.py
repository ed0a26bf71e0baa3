"""SQLAlchemy 2.x ORM of the catalog. The real schema comes from the Alembic migrations in
``migrations/versions``; ``tests/store`` checks that this metadata and the migrated schema agree.

Choices, and why:
- ``sqlalchemy.JSON`` for structured fields: it is JSON on PostgreSQL and TEXT on SQLite, so one
  schema serves both. Nothing filters on the inside of a JSON value; what must be filtered fast
  (tags) has its own table.
- Tags live twice: as a JSON list on the adapter row (read with the row, so listing 100k adapters
  needs no join and no per-row query) and as ``adapter_tags`` rows with an index on ``(tag,
  adapter_id)`` (so ``--tag x`` is an index lookup on both backends). ``Catalog`` writes both in the
  same transaction.
- Children reference ``adapters.id`` with ``ON DELETE CASCADE`` so removing an adapter removes its
  revisions, tags, metrics and the lineage rows where it is the child, in the database itself.
  ``lineage.parent_name`` is a plain string on purpose: the record of what a merge was made from
  must survive the removal of a parent.
- Timestamps are timezone-aware UTC in Python. SQLite has no time zones, so ``UTCDateTime`` stores
  naive UTC there and re-attaches UTC on the way out.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

__all__ = ["NAMING_CONVENTION", "Adapter", "AdapterRevision", "AdapterTag", "Base", "Lineage", "Metric", "UTCDateTime"]

# Explicit constraint names: Alembic can only alter or drop what it can name, and PostgreSQL and
# SQLite would otherwise generate different names for the same constraint.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC ``datetime`` on every backend (SQLite stores it naive, in UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass a timezone-aware UTC datetime")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSON, list[str]: JSON, datetime: UTCDateTime}


class Adapter(Base):
    """One catalog entry; its columns describe the current head revision."""

    __tablename__ = "adapters"
    # An equality filter, the listing order and the cursor in one index range (migration 0006).
    # PostgreSQL also has a trigram GIN index for free text (``gin_trgm_ops`` on a function the
    # migration defines): the migration creates it; it is declared here so that the schema check
    # compares it, not to be created from this metadata.
    __table_args__ = (
        Index("ix_adapters_task_name", "task", "name"),
        Index("ix_adapters_base_model_name", "base_model", "name"),
        Index(
            "ix_adapters_search_trgm",
            text("adapterhub_search_text(name, task, description, tags)"),
            postgresql_using="gin",
        ).ddl_if(dialect="postgresql"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    base_model: Mapped[str | None] = mapped_column(String(255))
    rank: Mapped[int] = mapped_column(Integer)
    alpha: Mapped[float] = mapped_column(Float)
    # Per-module rank (normalised module path -> rank) when ranks differ, else NULL.
    ranks: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    target_modules: Mapped[list[str]] = mapped_column(JSON)
    task: Mapped[str | None] = mapped_column(String(255))
    tags: Mapped[list[str]] = mapped_column(JSON)
    description: Mapped[str] = mapped_column(Text)
    digest: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    source_repo: Mapped[str | None] = mapped_column(String(255))
    source_revision: Mapped[str | None] = mapped_column(String(255))
    revision: Mapped[str] = mapped_column(String(40))
    created: Mapped[datetime] = mapped_column(UTCDateTime)

    tag_rows: Mapped[list[AdapterTag]] = relationship(
        back_populates="adapter", cascade="all, delete-orphan", passive_deletes=True
    )
    revision_rows: Mapped[list[AdapterRevision]] = relationship(
        back_populates="adapter", cascade="all, delete-orphan", passive_deletes=True
    )
    lineage_rows: Mapped[list[Lineage]] = relationship(
        back_populates="child", cascade="all, delete-orphan", passive_deletes=True
    )
    metric_rows: Mapped[list[Metric]] = relationship(
        back_populates="adapter", cascade="all, delete-orphan", passive_deletes=True
    )


class AdapterTag(Base):
    """One (adapter, tag) pair; the index on ``(tag, adapter_id)`` makes tag filters lookups."""

    __tablename__ = "adapter_tags"
    __table_args__ = (Index("ix_adapter_tags_tag_adapter_id", "tag", "adapter_id"),)

    adapter_id: Mapped[int] = mapped_column(ForeignKey("adapters.id", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(255), primary_key=True)

    adapter: Mapped[Adapter] = relationship(back_populates="tag_rows")


class AdapterRevision(Base):
    """One version of an adapter's content; the adapter row points at the head by ``revision``."""

    __tablename__ = "adapter_revisions"
    __table_args__ = (UniqueConstraint("adapter_id", "revision"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    adapter_id: Mapped[int] = mapped_column(ForeignKey("adapters.id", ondelete="CASCADE"), index=True)
    revision: Mapped[str] = mapped_column(String(40))
    parent_revision: Mapped[str | None] = mapped_column(String(40))
    digest: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    message: Mapped[str] = mapped_column(Text)
    source_revision: Mapped[str | None] = mapped_column(String(255))
    created: Mapped[datetime] = mapped_column(UTCDateTime)

    adapter: Mapped[Adapter] = relationship(back_populates="revision_rows")


class Lineage(Base):
    """One parent of a derived adapter (a merge input, an import source, a pulled repo)."""

    __tablename__ = "lineage"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    child_id: Mapped[int] = mapped_column(ForeignKey("adapters.id", ondelete="CASCADE"), index=True)
    parent_name: Mapped[str] = mapped_column(String(255), index=True)
    parent_digest: Mapped[str | None] = mapped_column(String(64))
    operation: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    weight: Mapped[float | None] = mapped_column(Float)
    position: Mapped[int] = mapped_column(Integer)

    child: Mapped[Adapter] = relationship(back_populates="lineage_rows")


class Metric(Base):
    """One measured number for an adapter (e.g. task=chatterbot/science, split=test, accuracy)."""

    __tablename__ = "metrics"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    adapter_id: Mapped[int] = mapped_column(ForeignKey("adapters.id", ondelete="CASCADE"), index=True)
    task: Mapped[str] = mapped_column(String(255))
    split: Mapped[str] = mapped_column(String(64))
    metric: Mapped[str] = mapped_column(String(64))
    value: Mapped[float] = mapped_column(Float)
    extra: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created: Mapped[datetime] = mapped_column(UTCDateTime)

    adapter: Mapped[Adapter] = relationship(back_populates="metric_rows")
