"""Database operations on derived artifacts (``orm_artifacts``): find, record, prune.

Plain functions over a ``Catalog`` as in ``hub_catalog``: each is one transaction (or joins the
caller's), reads are plain SQL, writes use the ORM table. The bytes are blobs the caller wrote
first; a row only points at one, so a crash between the two leaves an unreferenced blob for ``gc``,
never a row without its blob.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone

from adapterhub.store.catalog import Catalog

__all__ = ["ArtifactRecord", "find_artifact", "prune_artifacts", "record_artifact", "referenced_artifact_digests"]


@dataclass(frozen=True, slots=True)
class ArtifactRecord:
    """A derived artifact: computed from ``source_digest`` (as ``key`` says), stored as blob ``digest``."""

    kind: str
    key: str
    source_digest: str
    digest: str
    size: int


def find_artifact(catalog: Catalog, kind: str, key: str) -> ArtifactRecord | None:
    """The artifact of ``kind`` computed from what ``key`` names, or None if it was never computed."""
    with catalog.reading() as reader:
        rows = reader.rows(
            "SELECT kind, key, source_digest, digest, size FROM artifacts WHERE kind = :kind AND key = :key",
            {"kind": kind, "key": key},
        )
    return ArtifactRecord(*rows[0]) if rows else None


def record_artifact(catalog: Catalog, record: ArtifactRecord) -> ArtifactRecord:
    """Record an artifact whose blob is stored; returns the one recorded (a concurrent writer's wins).

    Two processes computing the same artifact at once compute the same bytes (artifacts are pure
    functions of their key); the second insert hits the unique ``(kind, key)`` and is dropped.
    """
    from sqlalchemy.exc import IntegrityError  # lazy: SQLAlchemy and the ORM on writes only

    from adapterhub.store.orm_artifacts import Artifact

    try:
        with catalog.transaction() as tx:
            tx.session.add(
                Artifact(
                    kind=record.kind,
                    key=record.key,
                    source_digest=record.source_digest,
                    digest=record.digest,
                    size=record.size,
                    created=datetime.now(timezone.utc),
                )
            )
            tx.session.flush()
    except IntegrityError:
        found = find_artifact(catalog, record.kind, record.key)
        if found is None:
            raise
        return found
    return record


def referenced_artifact_digests(catalog: Catalog) -> set[str]:
    """Every blob an artifact row points at (``gc`` keeps them)."""
    with catalog.reading() as reader:
        return {r[0] for r in reader.rows("SELECT DISTINCT digest FROM artifacts")}


def prune_artifacts(catalog: Catalog, live_sources: Iterable[str]) -> int:
    """Delete artifact rows derived from content nothing holds any more; returns how many.

    ``live_sources``: every digest still in use (weights and revision files of every revision).
    The blobs go with the next ``gc`` once no row points at them.
    """
    from sqlalchemy import delete, select  # lazy: SQLAlchemy and the ORM on writes only

    from adapterhub.store.orm_artifacts import Artifact

    live = set(live_sources)
    with catalog.transaction() as tx:
        stale = [i for i, source in tx.session.execute(select(Artifact.id, Artifact.source_digest)) if source not in live]
        if stale:
            tx.session.execute(delete(Artifact).where(Artifact.id.in_(stale)))
    return len(stale)
