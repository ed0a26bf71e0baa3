"""ORM table of derived artifacts: what engines compute from an adapter and keep (``artifacts``).

Why a table of its own, keyed by what the artifact was computed *from* rather than by adapter name:
a derived artifact (Arrow's singular vectors of some weights, the base-model embedding of an
adapter's example inputs, a router fitted on an inventory) is a pure function of content. Keyed by
``(kind, key)`` where ``key`` names that content (a weights digest, an examples digest plus the
base model, ...), it is never stale: an adapter whose weights or examples change gets a new key and
the artifact is recomputed on first use; two adapters with the same content share one. The bytes
are a blob (``digest``); ``source_digest`` is the content it was derived from, so ``gc`` can drop
rows (then blobs) whose source no adapter holds any more. Migration ``0004_artifacts``.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from adapterhub.store.orm import Base, UTCDateTime

__all__ = ["Artifact"]


class Artifact(Base):
    """One derived artifact: its kind, the key of what it was computed from, and its blob."""

    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("kind", "key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(255))
    source_digest: Mapped[str] = mapped_column(String(64), index=True)
    digest: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    created: Mapped[datetime] = mapped_column(UTCDateTime)
