"""Artifact rows of packed adapter libraries (``app.shards``): which pool blob rebuilds which weights.

Three kinds of rows in the ``artifacts`` table (``orm_artifacts``), each keyed by content:

* ``shard-library``: key = base model; ``digest`` (and ``source_digest``) = the pool blob holding
  the base's packed library. One per base; replaced by every pack or unpack.
* ``shard-packed``: key = weights digest of a packed adapter (the reconstruction's digest);
  ``digest`` = the pool blob that rebuilds it, ``source_digest`` = the key (the row is pruned with
  the rest of the artifacts once no revision holds that digest).
* ``shard-original``: key = weights digest a lossy pack replaced (an older revision's); its
  ``source_digest``/``digest`` = the reconstruction that replaced it. The blob may be gone: it is
  not rebuildable, and ``verify`` does not report it missing.

Writes take the caller's transaction (``CatalogWriter``), so a pack's revisions and rows commit
together.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from adapterhub.store.artifacts import ArtifactRecord
from adapterhub.store.catalog import Catalog

if TYPE_CHECKING:
    from adapterhub.store.writer import CatalogWriter

__all__ = ["LIBRARY", "ORIGINAL", "PACKED", "delete_rows", "head_digests", "names_with_digest", "put_rows", "rows"]

LIBRARY = "shard-library"
PACKED = "shard-packed"
ORIGINAL = "shard-original"


def rows(catalog: Catalog, kind: str) -> dict[str, ArtifactRecord]:
    """Every artifact row of ``kind``, by key."""
    with catalog.reading() as reader:
        found = reader.rows(
            "SELECT kind, key, source_digest, digest, size FROM artifacts WHERE kind = :kind ORDER BY key", {"kind": kind}
        )
    return {r[1]: ArtifactRecord(*r) for r in found}


def names_with_digest(catalog: Catalog, digest: str) -> list[str]:
    """Catalog entries whose head weights are ``digest`` (for error messages and stats)."""
    with catalog.reading() as reader:
        return [r[0] for r in reader.rows("SELECT name FROM adapters WHERE digest = :d ORDER BY name", {"d": digest})]


def head_digests(catalog: Catalog) -> set[str]:
    """The weights digest of every entry's head revision."""
    with catalog.reading() as reader:
        return {r[0] for r in reader.rows("SELECT digest FROM adapters")}


def delete_rows(tx: CatalogWriter, kind: str, keys: Iterable[str]) -> None:
    """Delete the rows of ``kind`` with these keys (in the caller's transaction)."""
    from sqlalchemy import delete  # lazy: SQLAlchemy and the ORM on writes only

    from adapterhub.store.orm_artifacts import Artifact

    keys = sorted(set(keys))
    for start in range(0, len(keys), 500):
        tx.session.execute(delete(Artifact).where(Artifact.kind == kind, Artifact.key.in_(keys[start : start + 500])))


def put_rows(tx: CatalogWriter, records: Iterable[ArtifactRecord]) -> None:
    """Insert rows, replacing any with the same ``(kind, key)`` (in the caller's transaction)."""
    from adapterhub.store.orm_artifacts import Artifact

    records = list(records)
    by_kind: dict[str, list[str]] = {}
    for r in records:
        by_kind.setdefault(r.kind, []).append(r.key)
    for kind, keys in by_kind.items():
        delete_rows(tx, kind, keys)
    tx.session.flush()
    now = datetime.now(timezone.utc)
    for r in records:
        tx.session.add(
            Artifact(kind=r.kind, key=r.key, source_digest=r.source_digest, digest=r.digest, size=r.size, created=now)
        )
    tx.session.flush()
